"""Keep Intel AMX from this process while llama.cpp keeps its other repacked weight layouts.

Linux lets a process execute AMX tile instructions only after it asks for the permission with
``arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)``. llama.cpp asks when it builds its list
of CPU buffer types and leaves the AMX buffer type out when the request fails ("AMX is not ready
to be used!"); the AVX2/AVX-512 repack buffer types stay. ``deny_amx`` installs a seccomp filter
that makes exactly that request fail with EPERM (every other system call is untouched), for
every thread of the process and its children. It must run before the first model load.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import sys

__all__ = ["deny_amx", "request_amx"]

_SYS_ARCH_PRCTL = 158  # x86-64
_SYS_SECCOMP = 317
_ARCH_REQ_XCOMP_PERM = 0x1023
_XFEATURE_XTILEDATA = 18
_AUDIT_ARCH_X86_64 = 0xC000003E
_PR_SET_NO_NEW_PRIVS = 38
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_TSYNC = 1
_SECCOMP_FILTER_FLAG_SPEC_ALLOW = 4  # no speculative-store-bypass mitigation imposed on us
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
# classic BPF opcodes
_LD_W_ABS = 0x20  # A = seccomp_data[k] (32 bits)
_JEQ_K = 0x15  # if A == k: skip jt, else skip jf
_RET_K = 0x06
# offsets in struct seccomp_data: nr (int), arch (u32), ip (u64), args (u64[6])
_NR, _ARCH, _ARG0_LOW = 0, 4, 16


class _Filter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_Filter))]


def _program() -> list[tuple[int, int, int, int]]:
    allow = 7  # index of the final ALLOW; jumps count from the next instruction
    return [
        (_LD_W_ABS, 0, 0, _ARCH),
        (_JEQ_K, 0, allow - 2, _AUDIT_ARCH_X86_64),
        (_LD_W_ABS, 0, 0, _NR),
        (_JEQ_K, 0, allow - 4, _SYS_ARCH_PRCTL),
        (_LD_W_ABS, 0, 0, _ARG0_LOW),
        (_JEQ_K, 0, allow - 6, _ARCH_REQ_XCOMP_PERM),
        (_RET_K, 0, 0, _RET_ERRNO | errno.EPERM),
        (_RET_K, 0, 0, _RET_ALLOW),
    ]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def deny_amx() -> str:
    """Make this process's AMX permission request fail; "" when done, else why it is not."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"not an x86-64 Linux machine ({sys.platform} {platform.machine()})"
    libc = _libc()
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return f"prctl(PR_SET_NO_NEW_PRIVS) failed: {errno.errorcode.get(ctypes.get_errno())}"
    rows = _program()
    filters = (_Filter * len(rows))(*(_Filter(*row) for row in rows))
    prog = _Program(len(rows), filters)
    # Older kernels impose SSBD (slower stores) on filtered processes unless told SPEC_ALLOW;
    # kernels before 4.17 do not know that flag (EINVAL), and impose nothing either.
    for flags in (_SECCOMP_FILTER_FLAG_TSYNC | _SECCOMP_FILTER_FLAG_SPEC_ALLOW,
                  _SECCOMP_FILTER_FLAG_TSYNC):  # fmt: skip
        if libc.syscall(_SYS_SECCOMP, _SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(prog)) == 0:
            return ""
        err = ctypes.get_errno()
        if err != errno.EINVAL:
            break
    return f"seccomp() failed: {errno.errorcode.get(err, err)}"


def request_amx() -> int:
    """Ask for the AMX permission as llama.cpp does: 0 when granted, else the errno."""
    libc = _libc()
    if libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) == 0:
        return 0
    return ctypes.get_errno()
