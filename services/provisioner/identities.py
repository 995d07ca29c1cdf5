"""Fresh identities for a clone: its UUID and MACs, drawn from the system's randomness.

Randomness is glue, not core: `core.clone.plan_clone` takes the values made here, so a plan is a
pure function of its inputs and tests pass fixed ones.
"""

from __future__ import annotations

import random
import uuid as uuids


def random_uuid(rng: random.Random | None = None) -> str:
    """A version-4 UUID for a clone, chosen before it is defined so the VM's identity is known first."""
    source = rng or random.SystemRandom()
    return str(uuids.UUID(int=source.getrandbits(128), version=4))


def random_macs(count: int, rng: random.Random | None = None) -> tuple[str, ...]:
    """`count` distinct MACs in QEMU's locally administered 52:54:00 range."""
    source = rng or random.SystemRandom()
    macs: list[str] = []
    while len(macs) < count:
        mac = "52:54:00:" + ":".join(f"{source.randrange(256):02x}" for _ in range(3))
        if mac not in macs:
            macs.append(mac)
    return tuple(macs)
