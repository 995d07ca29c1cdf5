"""The `quicfleet` command line: typer commands that parse arguments, call a flow, print
(the options, running and printing they share are in `ops.cli.runner`).

All fleet commands talk only NATS; `up`, `serve` and `template build` run local processes.
Failures print one line on stderr and exit non-zero (1: refused or not reached, 2: bad usage
or settings, 3: NATS or the answering service unreachable).
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.text import Text

from ops.cli import configcheck, flows, local, render, rollout, templates
from ops.cli.client import EXIT_ERROR, CliError, NatsSettings, session
from ops.cli.console import err, fail, out
from ops.cli.health import run_health
from ops.cli.progress import FleetTracker
from ops.cli.runner import Options, emit, execute
from shared.contract.base import utcnow

app = typer.Typer(name="quicfleet", help="Operate a quicfleet: an elastic HTTP/3 load balancer for KVM hosts.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=True)
policy_app = typer.Typer(help="Show or change the autoscaling policy.", no_args_is_help=True)
template_app = typer.Typer(help="Build the backend VM template; push and list its versions.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")
app.add_typer(template_app, name="template")


def show_version(value: bool) -> None:
    """`--version`: the installed release (pyproject.toml's version), before anything else is parsed."""
    if value:
        from shared.buildinfo import quicfleet_version

        out.print(f"quicfleet {quicfleet_version()}")
        raise typer.Exit(0)


@app.callback()
def main_options(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for NATS and for each reply.", min=0.1)] = 5.0,
    nats_url: Annotated[str | None, typer.Option(help="NATS URL (default $QUICFLEET_NATS_URL).")] = None,
    config: Annotated[Path | None, typer.Option(help="Settings file whose common section names NATS and the "
                                                "login (default: $QUICFLEET_CONFIG, else "
                                                "/etc/quicfleet/quicfleet.toml).")] = None,
    _version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                           callback=show_version)] = False,
) -> None:
    ctx.obj = Options(as_json, timeout, NatsSettings(nats_url, config))


async def _with_bus(options: Options, call: Any) -> Any:
    async with session(options.settings, options.timeout) as bus:
        return await call(bus)


@app.command()
def status(ctx: typer.Context) -> None:
    """Desired against actual fleet size, every VM (state, address, load, age) and the balancers."""
    options: Options = ctx.obj
    result = execute(_with_bus(options, lambda bus: flows.status(bus, options.timeout)))
    emit(options, result, render.status_view(result, utcnow()))


@app.command()
def scale(
    ctx: typer.Context,
    replicas: Annotated[int, typer.Argument(help="Desired number of VMs.", min=0)],
    wait: Annotated[bool, typer.Option(help="Follow progress until the fleet is there.")] = True,
    wait_timeout: Annotated[float, typer.Option(help="Seconds to wait for the fleet.", min=1)] = 300.0,
    max_failures: Annotated[int, typer.Option(help="Give up after this many failed VMs.", min=1)] = 3,
) -> None:
    """Set the desired fleet size and show progress until N VMs are ready (or it fails, or times out)."""
    options: Options = ctx.obj
    if not wait:
        result = execute(_with_bus(options, lambda bus: flows.ask_scale(bus, replicas, options.timeout)))
        emit(options, result, f"desired size set to {result.desired}")
        return
    shown = _ProgressPrinter(quiet=options.json)
    desired, tracker = execute(_with_bus(options, lambda bus: flows.scale(
        bus, replicas, options.timeout, wait_timeout, shown, max_failures)))
    emit(options, {"desired": desired.desired, "reached": True, "summary": tracker.summary()},
         Text.assemble((f"fleet at {replicas}: ", "green"), tracker.summary()))


class _ProgressPrinter:
    """Prints the progress line each time it changes (a scroll of steps, readable in CI logs too)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.last = ""

    def __call__(self, tracker: FleetTracker) -> None:
        line = tracker.summary()
        if not self.quiet and line != self.last:
            err.print(f"  {utcnow():%H:%M:%S} {line}", markup=False)
        self.last = line


@app.command()
def drain(ctx: typer.Context, vm: Annotated[str, typer.Argument(help="Name of the VM to drain and remove.")]) -> None:
    """Stop routing to a VM, let its requests finish, then remove it."""
    options: Options = ctx.obj
    result = execute(_with_bus(options, lambda bus: flows.drain(bus, vm, options.timeout)))
    emit(options, result, f"draining {vm}")


@policy_app.command("show")
def policy_show(ctx: typer.Context) -> None:
    """Show the autoscaling policy in force."""
    options: Options = ctx.obj
    result = execute(_with_bus(options, lambda bus: flows.status(bus, options.timeout)))
    emit(options, result.policy, render.policy_table(result.policy))


@policy_app.command("set")
def policy_set(
    ctx: typer.Context,
    pairs: Annotated[list[str], typer.Argument(help="key=value pairs, e.g. target=5 max_replicas=4.")],
) -> None:
    """Change policy fields (values are checked here, then by the scaler); shows the whole new policy."""
    options: Options = ctx.obj
    from ops.cli.policyargs import parse_patch

    try:
        patch = parse_patch(pairs)
    except ValueError as error:
        raise fail(str(error), 2) from None
    result = execute(_with_bus(options, lambda bus: flows.set_policy(bus, patch, options.timeout)))
    emit(options, result, render.policy_table(result))


@app.command()
def watch(
    ctx: typer.Context,
    load: Annotated[bool, typer.Option(help="Include the per-second fleet.load snapshots.")] = True,
    count: Annotated[int, typer.Option(help="Stop after this many events (0: never).", min=0)] = 0,
    duration: Annotated[float, typer.Option("--for", help="Stop after this many seconds (0: never).", min=0)] = 0,
) -> None:
    """Stream fleet.vm.*, fleet.scaler.decision and fleet.load as they happen (Ctrl-C to stop)."""
    options: Options = ctx.obj
    execute(_with_bus(options, lambda bus: _watch(bus, options, load, count, duration)))


async def _watch(bus: Any, options: Options, load: bool, count: int, duration: float) -> None:
    seen = 0
    stream = flows.watch(bus, include_load=load)
    if not options.json:
        err.print(f"watching {bus.subjects.prefix}.vm.*, scaler.decision{', load' if load else ''}", style="dim")
    try:
        async with asyncio.timeout(duration or None):
            async for subject, event in stream:
                _show_event(options, subject, event)
                seen += 1
                if seen == count:
                    break
    except TimeoutError:
        pass
    finally:
        await stream.aclose()


def _show_event(options: Options, subject: str, event: BaseModel) -> None:
    if options.json:
        sys.stdout.write(json.dumps({"subject": subject, "event": render.as_json(event)}) + "\n")
        sys.stdout.flush()
    else:
        out.print(render.event_text(subject, event, utcnow()))


@app.command()
def health(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="nats and/or service names (default: all).")] = None,
    window: Annotated[float, typer.Option(help="Seconds to wait for every service to answer.")] = 2.0,
) -> None:
    """Exit 0 when NATS (with JetStream) and each named service answer $SRV.PING; for healthchecks."""
    options: Options = ctx.obj
    pongs = execute(_with_bus(options, lambda bus: run_health(bus.nc, names or [], window, options.timeout)))
    emit(options, {"ok": True, "services": [p.__dict__ for p in pongs]},
         "ok: " + (", ".join(sorted({p.name for p in pongs})) or "nats"))


@app.command()
def get(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(help="Path to request.")] = "/",
    url: Annotated[str | None, typer.Option(help="Full URL (default: the first balancer in the status).")] = None,
    count: Annotated[int, typer.Option(help="How many GETs to send.", min=1, max=1000)] = 1,
    verify: Annotated[bool, typer.Option(help="Verify the balancer's TLS certificate.")] = False,
) -> None:
    """HTTP/3 GETs through the balancer; prints which VM answered each one."""
    from ops.cli import fetch

    options: Options = ctx.obj
    url = url or _balancer_url(options, path, "give --url")
    try:
        answers = fetch.get(url, count, verify, options.timeout)
        emit(options, {"url": url, "answers": [a.as_dict() for a in answers]},
             "\n".join(a.line() for a in answers))
        fetch.check(answers)
    except CliError as error:
        raise fail(error.message, error.code) from None


def _balancer_url(options: Options, path: str, hint: str) -> str:
    """The first reporting balancer's URL for `path`, from the fleet status (exit 3 when none has reported)."""
    from ops.cli import fetch

    status = execute(_with_bus(options, lambda bus: flows.status(bus, options.timeout)))
    url = fetch.balancer_url(status, path)
    if url is None:
        raise fail(f"no balancer has reported yet; {hint}", 3)
    return url


@app.command()
def forecast(ctx: typer.Context) -> None:
    """The scaler's load forecast for the next hours against the last days (waits up to a minute for it)."""
    from ops.cli import forecast as foresee

    options: Options = ctx.obj
    event = execute(_with_bus(options, foresee.next_forecast))
    out.print(event.model_dump_json() if options.json else "\n".join(foresee.lines(event)), markup=False)


@app.command()
def load(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Argument(
        help="https://HOST:PORT/PATH (default: the first balancer in the status).", show_default=False)] = None,
    rate: Annotated[float | None, typer.Option(
        help="Requests per second, each started on schedule (open loop).", min=0.01, max=100_000)] = None,
    concurrency: Annotated[int | None, typer.Option(
        help="Requests kept in flight, the next sent as one ends (closed loop).", min=1, max=10_000)] = None,
    duration: Annotated[float, typer.Option(help="Seconds to send for.", min=0.1, max=86_400)] = 10.0,
    path: Annotated[str | None, typer.Option(help="Path to request (default: the URL's, else /).")] = None,
    connections: Annotated[int, typer.Option(help="QUIC connections the requests share.", min=1, max=64)] = 2,
    max_in_flight: Annotated[int, typer.Option(
        help="With --rate: a request due while this many wait is not sent, and counts as dropped.",
        min=1, max=100_000)] = 1000,
    verify: Annotated[bool, typer.Option(help="Verify the balancer's TLS certificate.")] = False,
    ca_file: Annotated[Path | None, typer.Option(
        help="Verify it against this CA bundle (implies --verify).", exists=True, dir_okay=False)] = None,
) -> None:
    """HTTP/3 load through the balancer at a rate or a concurrency, with a live line and a summary.

    Failures count by kind: 5xx, 4xx, timeout (--timeout, per request), connection, reset, dropped.

    Exit code: 0 when every request succeeded, 1 when any failed, 3 when the balancer is not reached.
    """
    from ops.cli import load as loadgen
    from ops.cli import loadcore
    from shared.lifecycle import install_uvloop

    options: Options = ctx.obj
    try:
        loadcore.check_mode(rate, concurrency)
        target = loadcore.parse_target(url or _balancer_url(options, path or "/", "give a URL"), path)
    except ValueError as error:
        raise fail(str(error), 2) from None
    plan = loadcore.Plan(target, duration, rate, concurrency, max_in_flight, connections, options.timeout,
                         verify, ca_file)
    install_uvloop()
    with loadgen.live_display(quiet=options.json) as show:
        summary = execute(loadgen.run(plan, show))
    emit(options, summary, loadcore.summary_text(summary))
    problem = loadcore.failure_line(summary)
    if problem:
        raise fail(problem, EXIT_ERROR)
    if summary.interrupted:
        raise typer.Exit(130)


# The commands that run local processes rather than talk to the fleet.
local.register(app, template_app)
templates.register(template_app)
configcheck.register(app)
rollout.register(app)
