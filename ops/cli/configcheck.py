"""`quicfleet config check [--service X] [--config FILE]`: the settings each service would start with.

As `nginx -t` or `haproxy -c` do, it reads exactly what the service reads (the TOML file under
the `QUICFLEET_*` environment), prints the effective settings with secrets masked, and exits
non-zero on any mistake: an unknown section or key, a bad value, a certificate without its key,
and (stricter than a service's start, which only warns) a `QUICFLEET_*` variable no service reads.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import SecretStr

from ops.cli.console import err, fail, out
from ops.cli.health import SERVICES
from shared.certs import check_pair
from shared.configfile import COMMON, ConfigFileError, config_path, read_config, unknown_keys
from shared.redact import MASK, mask_credentials
from shared.settings import ServiceSettings, SettingsError, load_settings, unknown_variables

EXIT_INVALID = 2
"""Any mistake: the same status a service exits with when refused by its settings."""


@dataclass
class Report:
    """What the check found: effective settings per section, and one line per mistake."""

    file: Path | None
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def settings_classes() -> dict[str, type[ServiceSettings]]:
    """Each service's Settings class, by section name."""
    from ops.configdocs import settings_class

    return {service: settings_class(service) for service in SERVICES}


def check(services: list[str], config: Path | None, environ: dict[str, str]) -> Report:
    """Load every named service's settings as it would at start, collecting each mistake."""
    classes = settings_classes()
    report = Report(config_path(config, environ))
    try:
        file = read_config(report.file)
    except ConfigFileError as error:
        report.errors += str(error).split("\n  ")
        return report
    report.errors += unknown_keys(file, COMMON, ServiceSettings.model_fields)
    report.errors += [line for name in SERVICES if name not in services
                      for line in unknown_keys(file, name, classes[name].model_fields)]
    for name in services:
        report.errors += _load(report, name, classes[name], config)
    known = {n for cls in classes.values() for n in cls.model_fields}
    report.errors += unknown_variables(environ, known)
    return report


def _load(report: Report, name: str, cls: type[ServiceSettings], config: Path | None) -> list[str]:
    """One service's effective settings into the report; its mistakes as lines."""
    try:
        settings = load_settings(cls, config)
        check_pair(getattr(settings, "tls_cert", None), getattr(settings, "tls_key", None))
    except SettingsError as error:
        return [f"[{name}] {line.strip()}" for line in str(error).splitlines() if line.strip() != "invalid settings:"]
    report.sections[name] = {key: shown(value) for key, value in settings}
    return []


def shown(value: Any) -> Any:
    """A setting's value as printed: secrets as `***`, credentials in URLs masked, paths as text."""
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str):
        return mask_credentials(value)
    return value


def toml_lines(report: Report) -> list[str]:
    """The effective settings as a TOML file (unset ones as comments), ready to copy into the file."""
    lines = [f"# file: {report.file or 'none (environment and defaults only)'}"]
    for section, values in report.sections.items():
        lines += ["", f"[{section}]"]
        lines += [f"# {key} is unset" if value is None else f"{key} = {json.dumps(value)}"
                  for key, value in values.items()]
    return lines


def config_check(
    ctx: typer.Context,
    service: Annotated[str | None, typer.Option(help=f"Check one service only: {', '.join(SERVICES)}.")] = None,
    config: Annotated[Path | None, typer.Option(
        help="TOML file (default: $QUICFLEET_CONFIG, else /etc/quicfleet/quicfleet.toml when it exists).")] = None,
) -> None:
    """Print each service's effective settings (secrets masked); exit 2 on any mistake, as `nginx -t` does."""
    if service is not None and service not in SERVICES:
        raise fail(f"unknown service {service!r}; known: {', '.join(SERVICES)}", EXIT_INVALID)
    config = config or getattr(getattr(ctx.obj, "nats", None), "config", None)  # `quicfleet --config F config check`
    report = check([service] if service else list(SERVICES), config, dict(os.environ))
    if getattr(ctx.obj, "json", False):
        out.print(json.dumps({"ok": not report.errors, "file": str(report.file) if report.file else None,
                              "services": report.sections, "errors": report.errors}))
    else:
        out.print("\n".join(toml_lines(report)))
    for line in report.errors:
        err.print(f"quicfleet: config: {mask_credentials(line)}", style="red", markup=False, soft_wrap=True)
    if report.errors:
        raise typer.Exit(EXIT_INVALID)
    err.print("quicfleet: configuration ok", markup=False)


def register(app: typer.Typer) -> None:
    """Add the `config` group (`config check`) to the CLI's app."""
    config_app = typer.Typer(help="Check the settings file and environment.", no_args_is_help=True)
    config_app.command("check")(config_check)
    app.add_typer(config_app, name="config")
