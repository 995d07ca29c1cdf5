"""libvirt's exceptions turned into the port's `HypervisorError`, named by libvirt's error code.

Separate from the adapter so that every libvirt module of the provisioner (the adapter, its
events and its readers) raises the same error with the same code label, without importing the
adapter back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import libvirt

from services.provisioner.core.ports import HypervisorError

_LEVELS = ("VIR_ERR_NONE", "VIR_ERR_WARNING", "VIR_ERR_ERROR")
"""Error levels, not codes, though they share the prefix (and numbers 0-2 with codes)."""
_CODES = {getattr(libvirt, name): name[len("VIR_ERR_"):].lower() for name in dir(libvirt)
          if name.startswith("VIR_ERR_") and isinstance(getattr(libvirt, name), int) and name not in _LEVELS}
"""libvirt's error numbers by name (`VIR_ERR_NO_DOMAIN` -> `no_domain`), for the error counter's label."""


def message(error: libvirt.libvirtError) -> str:
    """libvirt's own words for an error; some errors carry none."""
    return error.get_error_message() or "unknown libvirt error"


@contextmanager
def errors(what: str) -> Iterator[None]:
    """Turn libvirt's exceptions into HypervisorError with a message saying what we were doing."""
    try:
        yield
    except libvirt.libvirtError as error:
        raise failure(what, error) from None


def failure(what: str, error: libvirt.libvirtError) -> HypervisorError:
    """A HypervisorError saying what we were doing, carrying libvirt's error code by name."""
    hypervisor_error = HypervisorError(f"{what}: {message(error)}")
    hypervisor_error.code = _CODES.get(error.get_error_code(), "unknown")
    return hypervisor_error
