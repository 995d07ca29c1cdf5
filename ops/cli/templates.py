"""`quicfleet template push`, `list` and `retire`: template versions on every host, over NATS.

A push goes to one host first (no digest known yet), then to the others with the digest the first
one reported, so every host checks that its own copy has the same bytes. Hosts are the ones named
with `--host`, else every provisioner that answers `fleet.prov.template.list`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine
from typing import Annotated, Any, TypeVar

import typer
from nats.errors import Error as NatsError
from pydantic import ValidationError
from rich.table import Table

from ops.cli.client import CliError, ask, lost, session
from ops.cli.console import fail, out
from shared.bus import Bus
from shared.contract.templates import HostTemplateVersion, ListTemplates, PushTemplate, RetireTemplate, TemplateList
from shared.errors import describe_validation_error

T = TypeVar("T")
LIST_WINDOW_S = 1.0
"""How long `template list` (and a push without `--host`) collects the hosts' answers."""


async def hosts(bus: Bus) -> list[TemplateList]:
    """Every provisioner's template list, sorted by host."""
    try:
        listed = await bus.gather(bus.subjects.prov_template_list, ListTemplates(), TemplateList, LIST_WINDOW_S)
    except NatsError as error:
        raise lost(error) from None
    return sorted(listed, key=lambda t: t.host)


async def push(bus: Bus, command: PushTemplate, targets: list[str], timeout: float) -> list[HostTemplateVersion]:
    """Push to `targets` (or every host) in turn; the first host's digest binds the others."""
    names = targets or [t.host for t in await hosts(bus)]
    if not names:
        raise CliError("no provisioner answered: nothing to push to")
    done: list[HostTemplateVersion] = []
    for host in names:
        bound = command if not done else command.model_copy(update={"digest": done[0].digest,
                                                                    "version": done[0].version})
        done.append(await ask(bus, bus.subjects.prov_template_push(host), bound, HostTemplateVersion, timeout))
    return done


async def retire(bus: Bus, version: str, targets: list[str], timeout: float) -> list[TemplateList]:
    """Retire `version` on `targets` (or every host that has it) in turn; a refusal (a backing chain or a rollout
    holds it) stops here with the host's reason."""
    names = targets or [t.host for t in await hosts(bus) if any(v.version == version for v in t.versions)]
    if not names:
        raise CliError(f"no host has template version {version}", 1)
    command = RetireTemplate(version=version)
    return [await ask(bus, bus.subjects.prov_template_retire(host), command, TemplateList, timeout) for host in names]


def versions_table(lists: list[TemplateList]) -> Table:
    """One row per host and version: ready, domains on it, protection, digest."""
    table = Table(title="Template versions", title_justify="left")
    for column in ("host", "version", "ready", "in use", "protected", "digest", "created"):
        table.add_column(column)
    for listed in lists:
        for v in listed.versions:
            table.add_row(listed.host, v.version, "yes" if v.ready else "no", str(v.in_use), v.protected or "-",
                          v.digest[:12], v.created_at.strftime("%Y-%m-%d %H:%M"))
        table.add_row(listed.host, f"({listed.template or 'template'})", "yes", str(listed.unversioned_in_use),
                      "-", "-", "-")
    return table


def pushed_table(done: list[HostTemplateVersion]) -> Table:
    table = Table(title="Pushed", title_justify="left")
    for column in ("host", "version", "digest", "bytes", "base"):
        table.add_column(column)
    for v in done:
        table.add_row(v.host, v.version, v.digest[:12], str(v.size_bytes or "-"), v.base or "-")
    return table


def _run(work: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(work)
    except CliError as error:
        raise fail(error.message, error.code) from None


def _print(ctx: typer.Context, data: list[Any], view: Table) -> None:
    if getattr(ctx.obj, "json", False):
        sys.stdout.write(json.dumps([d.model_dump(mode="json") for d in data]) + "\n")
    else:
        out.print(view)


def template_push(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="A domain (its one writable disk) or a disk image's path.")],
    version: Annotated[str | None, typer.Option(help="The version's name (default: its digest's first 12).")] = None,
    host: Annotated[list[str] | None, typer.Option(help="Push to this host (repeat; default: every host).")] = None,
    source_uri: Annotated[str | None, typer.Option(help="libvirt URI the source lives on (e.g. "
                                                   "qemu+ssh://kvm1/system), when hosts do not share it.")] = None,
    push_timeout: Annotated[float, typer.Option(help="Seconds one host may take to copy and check.", min=1)] = 900.0,
) -> None:
    """Make SOURCE a new template version on each host: copied into its pool, digest checked, ready."""
    try:
        command = PushTemplate(source=source, version=version, source_uri=source_uri)
    except ValidationError as error:
        raise fail(f"invalid argument: {describe_validation_error(error)}", 2) from None
    options = ctx.obj

    async def work() -> list[HostTemplateVersion]:
        async with session(options.settings, options.timeout) as bus:
            return await push(bus, command, list(host or []), push_timeout)

    done = _run(work())
    _print(ctx, done, pushed_table(done))


def template_list(ctx: typer.Context) -> None:
    """Every host's template versions: ready, how many domains stand on each, protection."""
    options = ctx.obj

    async def work() -> list[TemplateList]:
        async with session(options.settings, options.timeout) as bus:
            return await hosts(bus)

    lists = _run(work())
    _print(ctx, lists, versions_table(lists))


def template_retire(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="The version whose base image goes.")],
    host: Annotated[list[str] | None, typer.Option(help="Retire on this host (repeat; default: every host that "
                                                   "has it).")] = None,
) -> None:
    """Delete VERSION's base image on each host, refused while any domain's backing chain or a rollout holds it."""
    options = ctx.obj

    async def work() -> list[TemplateList]:
        async with session(options.settings, options.timeout) as bus:
            return await retire(bus, version, list(host or []), options.timeout)

    lists = _run(work())
    _print(ctx, lists, versions_table(lists))


def register(template_app: typer.Typer) -> None:
    """Add `push`, `list` and `retire` to the CLI's `template` group (beside `build`)."""
    template_app.command("push")(template_push)
    template_app.command("list")(template_list)
    template_app.command("retire")(template_retire)
