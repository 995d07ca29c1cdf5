"""A pinned BPF map read and written through the bpf(2) system call, with ctypes.

Why not bpftool or libbpf: bpftool is not in Debian's run set, and four map operations do not need
a library. The balancer fills the connection-ID program's maps (which VM address is which slot,
the CID length) and reads its counters; the kernel checks every key and value size for us.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
from collections.abc import Iterator
from pathlib import Path

_SYSCALL_BPF = {"x86_64": 321, "aarch64": 280, "arm64": 280}
BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM, BPF_MAP_DELETE_ELEM, BPF_MAP_GET_NEXT_KEY, BPF_OBJ_GET = 1, 2, 3, 4, 7
BPF_ANY = 0
_ATTR_SIZE = 32
"""Bytes of `union bpf_attr` the map commands use (map_fd, pad, key, value/next_key, flags)."""


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def bpf_available() -> str | None:
    """None when this machine can run bpf(2) from here, else why not (for the warning at start)."""
    if platform.machine() not in _SYSCALL_BPF:
        return f"no bpf(2) number known for {platform.machine()}"
    caps = _effective_capabilities()
    if not caps >> CAP_NET_ADMIN & 1 or not (caps >> CAP_BPF & 1 or caps >> CAP_SYS_ADMIN & 1):
        return "loading a tc BPF program needs CAP_NET_ADMIN and CAP_BPF (or root)"
    return None


CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF = 12, 21, 39


def _effective_capabilities() -> int:
    """This process's effective capability bits (/proc/self/status), so a non-root service with them qualifies."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def _bpf(command: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    """One bpf(2) call; OSError with the kernel's errno when it fails."""
    number = _SYSCALL_BPF[platform.machine()]
    result = int(_libc().syscall(ctypes.c_long(number), ctypes.c_int(command), attr, ctypes.c_uint(len(attr))))
    if result < 0:
        error = ctypes.get_errno()
        raise OSError(error, f"bpf({command}): {os.strerror(error)}")
    return result


def _address(buffer: ctypes.Array[ctypes.c_char]) -> int:
    return ctypes.addressof(buffer)


class BpfMap:
    """One map opened from its pin (BPF_OBJ_GET), with fixed key and value sizes. Close it when done."""

    def __init__(self, fd: int, key_size: int, value_size: int) -> None:
        self.fd = fd
        self.key_size = key_size
        self.value_size = value_size

    @classmethod
    def open_pinned(cls, path: Path, key_size: int, value_size: int) -> BpfMap:
        """The map pinned at `path` (a file in a bpffs)."""
        name = ctypes.create_string_buffer(os.fsencode(path))
        attr = ctypes.create_string_buffer(struct.pack("<QII", _address(name), 0, 0), 16)
        return cls(_bpf(BPF_OBJ_GET, attr), key_size, value_size)

    def _attr(self, key: ctypes.Array[ctypes.c_char], second: int, flags: int = 0) -> ctypes.Array[ctypes.c_char]:
        return ctypes.create_string_buffer(struct.pack("<IIQQQ", self.fd, 0, _address(key), second, flags), _ATTR_SIZE)

    def _key(self, key: bytes) -> ctypes.Array[ctypes.c_char]:
        if len(key) != self.key_size:
            raise ValueError(f"key of {len(key)} bytes, the map's are {self.key_size}")
        return ctypes.create_string_buffer(key, self.key_size)

    def update(self, key: bytes, value: bytes) -> None:
        """Insert or replace `key`'s value."""
        if len(value) != self.value_size:
            raise ValueError(f"value of {len(value)} bytes, the map's are {self.value_size}")
        data = ctypes.create_string_buffer(value, self.value_size)
        raw_key = self._key(key)  # the buffers must outlive the call: the attribute holds only their addresses
        _bpf(BPF_MAP_UPDATE_ELEM, self._attr(raw_key, _address(data), BPF_ANY))

    def lookup(self, key: bytes) -> bytes | None:
        """`key`'s value, or None when absent."""
        data = ctypes.create_string_buffer(self.value_size)
        raw_key = self._key(key)
        try:
            _bpf(BPF_MAP_LOOKUP_ELEM, self._attr(raw_key, _address(data)))
        except FileNotFoundError:
            return None
        return data.raw

    def delete(self, key: bytes) -> bool:
        """Remove `key`; False when it was not there."""
        raw_key = self._key(key)
        try:
            _bpf(BPF_MAP_DELETE_ELEM, self._attr(raw_key, 0))
        except FileNotFoundError:
            return False
        return True

    def keys(self) -> Iterator[bytes]:
        """Every key (a snapshot walk: entries added or evicted meanwhile may be missed or repeated)."""
        current: ctypes.Array[ctypes.c_char] | None = None
        while True:
            following = ctypes.create_string_buffer(self.key_size)
            attr = ctypes.create_string_buffer(
                struct.pack("<IIQQ", self.fd, 0, _address(current) if current is not None else 0, _address(following)),
                _ATTR_SIZE,
            )
            try:
                _bpf(BPF_MAP_GET_NEXT_KEY, attr)
            except FileNotFoundError:
                return
            current = following
            yield following.raw

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) still present during the walk."""
        for key in list(self.keys()):
            value = self.lookup(key)
            if value is not None:
                yield key, value

    def close(self) -> None:
        """Release the file descriptor (the map lives on while pinned or used by a program)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
