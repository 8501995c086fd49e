"""The keyring filter's BPF program, decoded and evaluated here by a small classic-BPF interpreter of its
own (the opcodes and actions are spelled out below, not taken from the module under test)."""

from __future__ import annotations

import struct

import pytest

from heidi_engine.agents.sandbox.seccomp import ARCHES, keyring_filter

LD_W_ABS, JEQ_K, JGE_K, RET_K = 0x20, 0x15, 0x35, 0x06
ALLOW, EPERM, KILL_PROCESS = 0x7FFF0000, 0x00050001, 0x80000000
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7, "i386": 0x40000003, "arm": 0x40000028}
KEYRING = {"x86_64": (248, 249, 250), "aarch64": (217, 218, 219)}  # add_key, request_key, keyctl
GETPID = {"x86_64": 39, "aarch64": 172}


def decide(program: bytes, arch: int, nr: int) -> int:
    """The action the kernel would take for system call ``nr`` made with audit arch ``arch``."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, *([0] * 6))  # struct seccomp_data
    ops = list(struct.iter_unpack("=HBBI", program))
    pc, acc = 0, 0
    while True:
        code, jt, jf, k = ops[pc]  # an IndexError is a jump off the end: the kernel would reject it
        if code == LD_W_ABS:
            (acc,) = struct.unpack_from("=I", data, k)
            pc += 1
        elif code in (JEQ_K, JGE_K):
            taken = acc == k if code == JEQ_K else acc >= k
            pc += 1 + (jt if taken else jf)
        elif code == RET_K:
            return k
        else:
            raise AssertionError(f"opcode {code:#x} at {pc} is not one the filter should use")


@pytest.mark.parametrize("machine", sorted(ARCHES))
def test_the_keyring_is_refused_and_everything_else_allowed(machine: str) -> None:
    program = keyring_filter(machine)
    assert len(program) % 8 == 0 and len(program) // 8 <= 4096  # BPF_MAXINSNS
    arch = AUDIT_ARCH[machine]
    for nr in range(1024):
        expected = EPERM if nr in KEYRING[machine] else ALLOW
        assert decide(program, arch, nr) == expected, (machine, nr)
    assert decide(program, arch, GETPID[machine]) == ALLOW


@pytest.mark.parametrize("machine", sorted(ARCHES))
def test_other_architectures_are_killed(machine: str) -> None:
    program = keyring_filter(machine)
    for name, arch in AUDIT_ARCH.items():
        if name != machine:
            # Their numbers mean other calls (i386's add_key is 286): none of them may pass.
            decisions = {decide(program, arch, nr) for nr in (0, 39, 172, 217, 248, 286, 287, 288)}
            assert decisions == {KILL_PROCESS}, name


def test_the_x32_abi_is_killed_on_x86_64() -> None:
    program = keyring_filter("x86_64")
    arch = AUDIT_ARCH["x86_64"]
    for nr in (0x40000000, 0x40000000 + 39, 0x40000000 + 248, 0x40000000 + 250, 0x7FFFFFFF):
        assert decide(program, arch, nr) == KILL_PROCESS, hex(nr)
    # Below the x32 bit: no such call, the kernel answers ENOSYS itself.
    assert decide(program, arch, 0x3FFFFFFF) == ALLOW


def test_an_unknown_architecture_gets_no_filter() -> None:
    with pytest.raises(ValueError, match="riscv64"):
        keyring_filter("riscv64")
    with pytest.raises(ValueError, match="32-bit"):
        keyring_filter("")
