"""The `quicfleet` commands that run things on this machine: `up`, `serve`, `template build`,
`config-docs`. `app.py` registers them on its app (`register`), so they share its error style
(`console`) without this module knowing the fleet commands.
"""

from __future__ import annotations

import importlib
import subprocess
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from ops.cli.console import ROOT, err, fail
from ops.cli.health import SERVICES


class NatsAuth(StrEnum):
    ON = "on"
    OFF = "off"


def up(
    no_lab: Annotated[bool, typer.Option("--no-lab", help="Never start the namespaced QEMU lab.")] = False,
    workdir: Annotated[Path, typer.Option(help="Where NATS data and logs go.")] = Path(".run"),
    nats_port: Annotated[int, typer.Option(help="NATS client port (a cluster's first node).")] = 4222,
    nats_cluster: Annotated[int, typer.Option(
        help="Run a NATS cluster of this many nodes (3 or 5) on loopback: client ports nats-port, +1 ...; "
             "routes +2000; monitoring +4000. Every bucket gets that many replicas.", min=1, max=5,
    )] = 1,
    lab_name: Annotated[str, typer.Option(help="The lab's network namespace.")] = "quicfleet-lab",
    nats_auth: Annotated[NatsAuth, typer.Option(
        envvar="QUICFLEET_NATS_AUTH", case_sensitive=False,
        help="on: one NATS user per service and one for this CLI, each allowed its own subjects only "
             "(passwords in WORKDIR/nats-auth); off: no login, any local process may do anything.",
    )] = NatsAuth.ON,
) -> None:
    """Run the local stack: NATS with JetStream and the four services, logs merged; Ctrl-C stops it all."""
    from ops.natsserver import fixed_node_ports
    from ops.stack.supervisor import StackOptions, run_stack

    if nats_cluster > 1:
        try:
            fixed_node_ports(nats_port, nats_cluster)
        except ValueError as error:
            raise fail(str(error), 2) from None
    if nats_cluster % 2 == 0:
        err.print(f"warning: {nats_cluster} NATS nodes tolerate no more failures than {nats_cluster - 1}; "
                  "use an odd number", markup=False)
    options = StackOptions(workdir=workdir.resolve(), nats_port=nats_port, nats_cluster=nats_cluster,
                           lab=not no_lab, lab_name=lab_name, nats_auth=nats_auth is NatsAuth.ON)
    raise typer.Exit(run_stack(options))


def serve(service: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICES)}.")]) -> None:
    """Run one service in this process (what `python -m services.<name>` does)."""
    if service not in SERVICES:
        raise fail(f"unknown service {service!r}; known: {', '.join(SERVICES)}", 2)
    module = importlib.import_module(f"services.{service}.__main__")
    raise typer.Exit(module.main())


def template_build() -> None:
    """Build the Debian test template VM and define it in libvirt (deploy/template/build.sh)."""
    from ops.paths import DEPLOY

    script = DEPLOY / "template" / "build.sh"
    if not script.exists():
        raise fail(f"{script} not found (neither in this checkout nor installed with the package)", 2)
    raise typer.Exit(subprocess.call(["bash", str(script)], cwd=DEPLOY.parent))


def config_docs(
    output: Annotated[Path, typer.Option(help="Where to write the reference.")] = ROOT / "docs" / "configuration.md",
    check: Annotated[bool, typer.Option(help="Only check that the file is up to date.")] = False,
) -> None:
    """Regenerate the configuration reference from the Settings classes."""
    from ops import configdocs

    if check:
        current = output.read_text() if output.exists() else ""
        if current != configdocs.render():
            raise fail(f"{output} is out of date; run `make docs`", 1)
        return
    changed = configdocs.write(output)
    err.print(f"{output}: {'updated' if changed else 'already up to date'}", markup=False)


def register(app: typer.Typer, template_app: typer.Typer) -> None:
    """Add the local commands to the CLI's app and its `template` group."""
    app.command()(up)
    app.command()(serve)
    app.command("config-docs")(config_docs)
    template_app.command("build")(template_build)
