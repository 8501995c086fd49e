"""The seccomp filter of sandboxed code: a classic-BPF program, built here without libseccomp.

Like the default profile of container runtimes, it refuses the kernel keyring (``add_key``,
``request_key``, ``keyctl``) with EPERM: keys live in the kernel, outside every namespace and tmpfs of the
run, so a key added by a run would outlive it. Everything else is allowed. A system call made with another
architecture's convention (a 32-bit binary the code wrote and ran, or x86_64's x32 ABI, whose numbers
are the x86_64 ones plus ``0x40000000``) could name those calls by other numbers, so it kills the process.

The program is data: :func:`keyring_filter` builds it for this interpreter's architecture and the
runner hands it to the harness, which installs it (``harness.install_filter``) in the process that will
run the code, in every backend that confines.
"""

from __future__ import annotations

import errno
import os
import struct
import sys
from dataclasses import dataclass

__all__ = ["ARCHES", "Arch", "keyring_filter", "this_machine"]

# struct sock_filter opcodes (linux/bpf_common.h).
LOAD_WORD = 0x00 | 0x00 | 0x20  # BPF_LD | BPF_W | BPF_ABS: A = seccomp_data[k]
JUMP_EQUAL = 0x05 | 0x10  # BPF_JMP | BPF_JEQ | BPF_K
JUMP_AT_LEAST = 0x05 | 0x30  # BPF_JMP | BPF_JGE | BPF_K
RETURN = 0x06  # BPF_RET | BPF_K
# Offsets into struct seccomp_data.
NR_OFFSET = 0
ARCH_OFFSET = 4
# Actions (linux/seccomp.h).
ALLOW = 0x7FFF0000
REFUSE = 0x00050000 | errno.EPERM  # SECCOMP_RET_ERRNO with EPERM
KILL = 0x80000000  # SECCOMP_RET_KILL_PROCESS (older kernels read it as SECCOMP_RET_KILL)


@dataclass(frozen=True)
class Arch:
    """One architecture's audit id, its numbers for the keyring calls, and where numbers of another ABI
    sharing its audit id begin (None: no such ABI)."""

    audit: int
    keyring: tuple[int, int, int]  # add_key, request_key, keyctl
    foreign_from: int | None = None


ARCHES = {
    "x86_64": Arch(0xC000003E, (248, 249, 250), foreign_from=0x40000000),  # x32 shares the audit id
    "aarch64": Arch(0xC00000B7, (217, 218, 219)),
}


def this_machine() -> str:
    """The architecture this interpreter makes system calls with ("" when it is a 32-bit build, whose
    calls a 64-bit kernel sees under another audit id)."""
    return os.uname().machine if sys.maxsize > 2**32 else ""


def keyring_filter(machine: str | None = None) -> bytes:
    """The BPF program (``struct sock_filter`` array, native byte order) for ``machine`` (default:
    :func:`this_machine`); ValueError for an architecture it has no numbers for."""
    name = this_machine() if machine is None else machine
    arch = ARCHES.get(name)
    if arch is None:
        known = ", ".join(ARCHES)
        raise ValueError(f"no seccomp filter for the architecture {name or '32-bit'!r} (known: {known})")
    guard = 1 if arch.foreign_from is not None else 0
    allow = 3 + guard + len(arch.keyring)  # the index of the first return, then refuse, then kill
    refuse, kill = allow + 1, allow + 2
    program = [
        _op(LOAD_WORD, ARCH_OFFSET),
        _jump(JUMP_EQUAL, arch.audit, at=1, if_false=kill),
        _op(LOAD_WORD, NR_OFFSET),
    ]
    if arch.foreign_from is not None:
        program.append(_jump(JUMP_AT_LEAST, arch.foreign_from, at=len(program), if_true=kill))
    for number in arch.keyring:
        program.append(_jump(JUMP_EQUAL, number, at=len(program), if_true=refuse))
    program += [_op(RETURN, ALLOW), _op(RETURN, REFUSE), _op(RETURN, KILL)]
    return b"".join(program)


def _op(code: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, 0, 0, k)


def _jump(code: int, k: int, *, at: int, if_true: int | None = None, if_false: int | None = None) -> bytes:
    """A conditional jump at index ``at`` to absolute indexes (None: the next instruction); BPF counts
    forward from the instruction after the jump."""

    def offset(target: int | None) -> int:
        return 0 if target is None else target - at - 1

    return struct.pack("=HBBI", code, offset(if_true), offset(if_false), k)
