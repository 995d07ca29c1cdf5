"""`quicfleet rollout start|status|pause|resume|abort`: replace the fleet by a new template version.

The scaler's leader runs the rollout (docs/services/scaler.md, "Rollout"); these commands only ask
any scaler replica to change or show the stored rollout (`fleet.cmd.rollout.*`), so they return at
once. `status` shows the phase, why it is there, and the fleet's VMs per version.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ValidationError

from shared.contract.rollout import (
    AbortRollout,
    GetRollout,
    PauseRollout,
    ResumeRollout,
    RolloutState,
    RolloutStatus,
    StartRollout,
)
from shared.contract.subjects import Subjects
from shared.errors import describe_validation_error

rollout_app = typer.Typer(help="Replace the fleet's VMs by a new template version (canary, batches, rollback).",
                          no_args_is_help=True)


def summary(state: RolloutState | None) -> str:
    """The rollout in one line (also `quicfleet status`'s rollout line)."""
    if state is None:
        return "no rollout was started"
    old = state.old_version or "the template domain"
    line = f"rollout {old} -> {state.new_version}: {state.phase.value}"
    if state.batch:
        line += f", replacing {', '.join(state.batch)}"
    return f"{line} ({state.reason})" if state.reason else line


def lines(status: RolloutStatus) -> list[str]:
    """`quicfleet rollout status` as text: the summary, the settings and one line per version."""
    out = [summary(status.rollout)]
    if status.rollout is not None:
        s = status.rollout.settings
        checkpoints = ", ".join(f"{p:g}%" for p in s.checkpoints) or "none"
        out.append(f"max surge {s.max_surge}, min healthy {s.min_healthy_share:.0%}, canary {s.canary}, "
                   f"bake {s.bake_s:g} s, checkpoints {checkpoints}; {status.rollout.replaced} VM(s) replaced")
        out += [f"  {h.version or 'template domain'}: {h.requests:.0f} requests, {h.error_share:.2%} errors, "
                f"p95 {h.p95_s * 1000:.0f} ms" for h in status.rollout.health if h.requests]
    for row in status.versions:
        out.append(f"{row.version or 'template domain':>20}  ready {row.ready}  starting {row.starting}  "
                   f"pooled {row.pooled}  leaving {row.leaving}")
    return out


async def _ask(options: Any, pick: Callable[[Subjects], str], command: BaseModel) -> RolloutStatus:
    from ops.cli.client import ask, session

    async with session(options.settings, options.timeout) as bus:
        return await ask(bus, pick(bus.subjects), command, RolloutStatus, options.timeout)


def _run(ctx: typer.Context, pick: Callable[[Subjects], str], command: BaseModel) -> None:
    """Send one rollout command to any scaler replica and print the rollout it answers with.

    (The app's `execute`/`emit` are not imported: the app imports this module to register it.)
    """
    from ops.cli.client import CliError
    from ops.cli.console import fail, out

    options = ctx.obj
    try:
        result = asyncio.run(_ask(options, pick, command))
    except CliError as error:
        raise fail(error.message, error.code) from None
    if options.json:
        sys.stdout.write(result.model_dump_json() + "\n")
    else:
        out.print("\n".join(lines(result)), markup=False)


@rollout_app.command("start")
def start(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="The template version to roll out (pushed to the hosts first).")],
    max_surge: Annotated[int, typer.Option(help="VMs above the desired size at once.", min=1)] = 1,
    min_healthy: Annotated[float, typer.Option(help="Share of the desired size kept ready (0..1).", min=0,
                                               max=1)] = 1.0,
    canary: Annotated[int, typer.Option(help="VMs in the first batch, baked before the rest (0: none).", min=0)] = 1,
    bake: Annotated[float, typer.Option(help="Seconds the canary serves beside the old version.", min=0)] = 60.0,
    checkpoint: Annotated[list[float] | None, typer.Option(
        help="Pause when this percentage of the fleet runs the new version (repeatable).")] = None,
    min_requests: Annotated[int, typer.Option(help="Requests per version before they are compared.", min=1)] = 100,
) -> None:
    """Start replacing every VM by a clone of VERSION: canary, bake, batches, checkpoints; rolled back on its own."""
    try:
        command = StartRollout(version=version, max_surge=max_surge, min_healthy_share=min_healthy, canary=canary,
                               bake_s=bake, checkpoints=checkpoint or [], min_requests=min_requests)
    except ValidationError as error:
        from ops.cli.console import fail

        raise fail(f"invalid argument: {describe_validation_error(error)}", 2) from None
    _run(ctx, lambda s: s.cmd_rollout_start, command)


@rollout_app.command("status")
def status(ctx: typer.Context) -> None:
    """The rollout's phase and reason, its settings, each version's figures and the fleet's VMs per version."""
    _run(ctx, lambda s: s.cmd_rollout_status, GetRollout())


@rollout_app.command("pause")
def pause(ctx: typer.Context,
          reason: Annotated[str | None, typer.Option(help="Why (shown in the status).")] = None) -> None:
    """Start no new batch until `rollout resume` (the batch in flight finishes)."""
    _run(ctx, lambda s: s.cmd_rollout_pause, PauseRollout(reason=reason))


@rollout_app.command("resume")
def resume(ctx: typer.Context) -> None:
    """Go on from a pause or a checkpoint."""
    _run(ctx, lambda s: s.cmd_rollout_resume, ResumeRollout())


@rollout_app.command("abort")
def abort(ctx: typer.Context,
          reason: Annotated[str | None, typer.Option(help="Why (shown in the status).")] = None) -> None:
    """Roll back: the new version's VMs are replaced by the old version's, the same way."""
    _run(ctx, lambda s: s.cmd_rollout_abort, AbortRollout(reason=reason))


def register(app: typer.Typer) -> None:
    """Add the `rollout` group to the CLI's app."""
    app.add_typer(rollout_app, name="rollout")
