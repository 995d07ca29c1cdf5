"""`quicfleet config-docs`: docs/configuration.md, generated from the Settings classes.

The reference is rebuilt from the code (`make docs`), so it cannot drift from what the services
actually read. Service settings are found by module path (`services.<name>.settings`), imported
by name so that shared/ keeps no static dependency on any service.
"""

from __future__ import annotations

import importlib
import inspect
import types
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from ops.cli.health import SERVICES
from shared.settings import ENV_PREFIX, ServiceSettings

HEADER = """# Configuration reference

Generated from the Settings classes by `make docs` (`quicfleet config-docs`); do not edit by hand.

Every service reads its settings at start from two places, the environment winning:

1. `QUICFLEET_*` environment variables (a systemd unit's `Environment=`, compose's `environment:`);
2. a TOML file: `--config FILE`, else `$QUICFLEET_CONFIG` (empty: no file), else
   `/etc/quicfleet/quicfleet.toml` when it exists. Its `[common]` section holds the shared settings
   below, and `[balancer]`, `[metrics]`, `[scaler]`, `[provisioner]` each service's own (a service
   section may also override a shared setting for that service). Keys are the variable names
   without `QUICFLEET_`, in lower case:

```toml
[common]
nats_url = "tls://nats1.example.net:4222"
log_level = "info"

[balancer]
listen_host = "0.0.0.0"
listen_port = 443
tls_cert = "/etc/quicfleet/tls/fullchain.pem"
tls_key = "/etc/quicfleet/tls/privkey.pem"
```

A bad value, an unknown section or an unknown key in the file stops the service with one line
naming it (exit status 2, which the systemd units do not restart). A `QUICFLEET_*` variable that
no service reads is logged as a warning at start (`settings.unknown_variable`, with the closest
real name). `quicfleet config check [--service X] [--config FILE]` prints the effective settings
with secrets masked and exits 2 on any of these mistakes (the misspelt variable included), as
`nginx -t` does. deploy/quicfleet.toml is a commented example. The CLI reads the same file's
`[common]` only (`quicfleet --config FILE …`), under the same variables and below `--nats-url`: with
NATS users, `[common]` holds the operator's login and each service's section its own.
"""


def settings_class(service: str) -> type[ServiceSettings]:
    """The ServiceSettings subclass defined in `services.<service>.settings`."""
    module = importlib.import_module(f"services.{service}.settings")
    found = [
        cls for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, ServiceSettings) and cls is not ServiceSettings and cls.__module__ == module.__name__
    ]
    if len(found) != 1:
        raise LookupError(f"services.{service}.settings defines {len(found)} settings classes, expected 1")
    return found[0]


def type_name(annotation: Any) -> str:
    """A reader's name for a field type: `int`, `path, optional`, `one of: a, b`."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        inner = " or ".join(type_name(a) for a in args)
        return f"{inner}, optional" if len(args) < len(get_args(annotation)) else inner
    if origin is Literal:
        return "one of: " + ", ".join(str(a) for a in get_args(annotation))
    if inspect.isclass(annotation) and issubclass(annotation, Enum):
        return "one of: " + ", ".join(str(m.value) for m in annotation)
    if annotation is SecretStr:
        return "secret"
    if inspect.isclass(annotation) and issubclass(annotation, Path):
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "(computed at start)"
    if field.default is PydanticUndefined:
        return "(required)"
    if field.default is None:
        return "-"
    value = field.default.value if isinstance(field.default, Enum) else field.default
    return f"`{value}`"


def bounds_text(field: FieldInfo) -> str:
    """Numeric bounds from the field's constraints, e.g. `> 0, <= 600`."""
    marks = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    parts = [f"{sign} {getattr(meta, key)}" for meta in field.metadata for key, sign in marks.items()
             if getattr(meta, key, None) is not None]
    return ", ".join(parts)


def row(name: str, field: FieldInfo) -> str:
    kind = type_name(field.annotation)
    bounds = bounds_text(field)
    kind += f" ({bounds})" if bounds else ""
    description = (field.description or "").replace("|", "\\|").replace("\n", " ")
    return f"| `{ENV_PREFIX}{name.upper()}` | {kind} | {default_text(field)} | {description} |"


def table(fields: dict[str, FieldInfo]) -> list[str]:
    lines = ["| Variable | Type | Default | Meaning |", "|---|---|---|---|"]
    return lines + [row(name, field) for name, field in fields.items()]


def own_fields(cls: type[ServiceSettings]) -> dict[str, FieldInfo]:
    """Fields a service adds on top of the shared ones (or redefines with another default)."""
    shared = ServiceSettings.model_fields
    return {n: f for n, f in cls.model_fields.items() if n not in shared or f.default != shared[n].default}


def render() -> str:
    """The whole configuration reference as Markdown."""
    lines = [HEADER, "## Every service and the CLI", "", *table(ServiceSettings.model_fields), ""]
    for service in SERVICES:
        cls = settings_class(service)
        lines += [f"## {service} (`{cls.__name__}`)", ""]
        doc = inspect.getdoc(cls)
        lines += [doc, ""] if doc else []
        fields = own_fields(cls)
        lines += [*table(fields), ""] if fields else ["Only the shared settings above.", ""]
    return "\n".join(lines).rstrip() + "\n"


def write(path: Path) -> bool:
    """Write the reference to `path`; True when the file changed."""
    text = render()
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True
