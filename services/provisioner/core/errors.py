"""The provisioner's refusals, in its own words: raised where the rule is, put into bus errors at the edge.

A rule deep in the fleet knows *why* a command cannot be done (the host is full, the VM is someone
else's, a newer leader is in charge), not how a NATS reply spells it: `service.py` maps each class
to an `ErrorCode` (`CODES` there), so the table and its steps never build a reply.
"""

from __future__ import annotations


class Refused(Exception):
    """A command the provisioner will not carry out; `str()` says why, in words a person can act on."""


class StaleEpoch(Refused):
    """The command comes from a leader older than one already obeyed (a deposed scaler): nothing is done."""


class NoRoom(Refused):
    """The host cannot take another VM: `max_vms` reached, or every static address in use."""


class CannotClone(Refused):
    """The template cannot be cloned now: missing, unreadable, or its static addresses do not parse."""


class NotOurs(Refused):
    """The named domain is not tagged with this fleet and host, so it is never touched."""


class UnknownVm(Refused):
    """No live VM of that name on this host (never ours, or already gone)."""


class CannotDrain(Refused):
    """The VM is live but not serving (booting, pooled, ...): only a `ready` VM drains; destroy it instead."""


class RemovalIncomplete(Refused):
    """libvirt did not let a teardown finish (the VM is `failed`; the reconcile reaps what is left)."""


class VersionConflict(Refused):
    """A template command that would break a version: a digest that differs, a label taken, a base still held."""


class UnknownVersion(Refused):
    """No template version of that name on this host."""
