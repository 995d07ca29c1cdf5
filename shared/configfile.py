"""The TOML settings file beside the environment: `/etc/quicfleet/quicfleet.toml`, checked strictly.

A file an operator edits by hand is where typos live, so every key must name a setting of its
section, and every section a service (or `common`): a misspelt key is an error at start, never a
default silently kept. Environment variables still win over the file, so a unit's
`Environment=` or a one-off `QUICFLEET_X=… quicfleet serve x` overrides without editing it.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_ENV = "QUICFLEET_CONFIG"
"""Names the file (as `--config` does); an empty value turns the file off."""
DEFAULT_CONFIG = Path("/etc/quicfleet/quicfleet.toml")
"""Read when it exists and neither `--config` nor `QUICFLEET_CONFIG` names another file."""
COMMON = "common"
"""The section every service reads before its own (NATS, logging, instance)."""
SECTIONS = (COMMON, "balancer", "metrics", "scaler", "provisioner")


class ConfigFileError(ValueError):
    """The file cannot be read, is not TOML, or names a section or key that does not exist."""


@dataclass(frozen=True)
class ConfigFile:
    """The parsed file: one table per section, and where it came from (for messages)."""

    path: Path | None = None
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    def values(self, section: str) -> dict[str, Any]:
        """`[common]` overlaid with `[section]`: what a service of that section reads."""
        own = self.sections.get(section, {}) if section != COMMON else {}
        return {**self.sections.get(COMMON, {}), **own}

    def origin(self, section: str, key: str) -> str:
        """Where a key's value comes from, for an error message: `file [section] key`."""
        where = section if key in self.sections.get(section, {}) else COMMON
        return f"{self.path} [{where}] {key}"


def config_path(explicit: Path | None = None, environ: Mapping[str, str] = os.environ) -> Path | None:
    """The file to read: `--config`, else `QUICFLEET_CONFIG`, else the default path when it exists."""
    if explicit is not None:
        return explicit
    if CONFIG_ENV in environ:
        return Path(environ[CONFIG_ENV]) if environ[CONFIG_ENV] else None
    return DEFAULT_CONFIG if _present(DEFAULT_CONFIG) else None


def _present(path: Path) -> bool:
    """Whether `path` is a file, counting one behind a directory this user may not enter.

    /etc/quicfleet is 0750 root:quicfleet. For a user outside the group `is_file()` raises (a
    traceback), and treating the file as absent would be worse (the CLI would try the default
    NATS without a login): reading it then says "Permission denied" in one line instead.
    """
    try:
        return path.is_file()
    except PermissionError:
        return True


def read_config(path: Path | None) -> ConfigFile:
    """Parse the file (an empty `ConfigFile` when there is none); bad TOML or an unknown section raises."""
    if path is None:
        return ConfigFile()
    try:
        document = tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigFileError(f"{path}: cannot read: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigFileError(f"{path}: not valid TOML: {error}") from None
    problems = [_section_problem(path, name, value) for name, value in document.items()]
    if found := [p for p in problems if p]:
        raise ConfigFileError("\n  ".join(found))
    return ConfigFile(path, {name: dict(value) for name, value in document.items()})


def _section_problem(path: Path, name: str, value: Any) -> str | None:
    if not isinstance(value, dict):
        return f"{path}: {name!r} is outside any section; put it under [{COMMON}] or a service's section"
    if name not in SECTIONS:
        return f"{path}: unknown section [{name}]{suggest(name, SECTIONS)}; sections: {', '.join(SECTIONS)}"
    return None


def unknown_keys(config: ConfigFile, section: str, known: Iterable[str]) -> list[str]:
    """One line per key of `[section]` that names no setting in `known`, with a close match if any."""
    names = sorted(known)
    return [f"{config.path} [{section}] {key}: unknown setting{suggest(key, names)}"
            for key in config.sections.get(section, {}) if key not in names]


def suggest(word: str, choices: Iterable[str]) -> str:
    """` (did you mean x?)` for the closest of `choices`, or nothing when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""
