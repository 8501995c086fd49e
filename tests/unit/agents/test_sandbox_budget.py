"""A run's memory budget, split between its tmpfs (files there are memory) and its processes."""

from __future__ import annotations

import pytest

from heidi_engine.agents.sandbox.runner import SandboxLimits

MB = 1 << 20


@pytest.mark.parametrize("memory_mb", [64, 100, 1024, 65536])
@pytest.mark.parametrize("count", [1, 3, 5])
def test_the_tmpfs_and_the_processes_together_stay_within_the_memory(memory_mb: int, count: int) -> None:
    each, processes = SandboxLimits(memory_mb=memory_mb).budget(count)
    assert 0 < each <= 64 * MB and each % 4096 == 0
    assert each * count <= memory_mb * MB // 4  # a quarter at most goes to files
    assert each * count + processes == memory_mb * MB


def test_the_default_gives_each_tmpfs_its_scratch_size() -> None:
    assert SandboxLimits().budget(3) == (64 * MB, 1024 * MB - 3 * 64 * MB)  # bwrap: /tmp, /dev/shm, /work
    each, processes = SandboxLimits().budget(5)  # the built-in sandbox: four shared folders and its own
    assert each < 64 * MB and processes == 1024 * MB - 5 * each


def test_without_tmpfs_the_processes_get_it_all() -> None:
    assert SandboxLimits(memory_mb=512).budget(0) == (0, 512 * MB)
