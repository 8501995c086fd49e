"""GPU/host sampling: the NVML path through a fake pynvml, the no-GPU path for real."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from heidi_engine.supervisor.sampler import NvmlSource, Sampler


class FakeNvmlError(Exception):
    pass


class FakeNvml:
    """The handful of pynvml calls the sampler makes, for two GPUs; GPU 1 lacks power readings."""

    NVMLError = FakeNvmlError
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, *, count: int = 2, init_error: bool = False) -> None:
        self.count = count
        self.init_error = init_error
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        if self.init_error:
            raise FakeNvmlError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return SimpleNamespace(used=(handle + 1) * 1024 * 2**20, total=16 * 1024 * 2**20)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return SimpleNamespace(gpu=40 + 20 * handle)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        return 60 + handle

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        if handle == 1:
            raise FakeNvmlError("Not Supported")
        return 250_000

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return b"NVIDIA H200"


def test_nvml_reads_every_gpu_and_tolerates_unsupported_fields() -> None:
    nvml = FakeNvml()
    sampler = Sampler(NvmlSource(nvml))
    sample = sampler.sample()
    assert [g.index for g in sample.gpus] == [0, 1]
    first, second = sample.gpus
    assert first.name == "NVIDIA H200" and first.vram_used_mb == 1024 and first.vram_total_mb == 16384
    assert first.util_pct == 40 and first.temperature_c == 60 and first.power_w == 250.0
    assert second.power_w is None and second.util_pct == 60
    assert sample.gpu_message is None and sample.host.ram_total_mb > 0
    sampler.close()
    assert nvml.shutdowns == 1


@pytest.mark.parametrize("nvml", [FakeNvml(init_error=True), FakeNvml(count=0)])
def test_no_driver_or_no_gpu_is_an_error_for_the_source(nvml: FakeNvml) -> None:
    with pytest.raises(RuntimeError):
        NvmlSource(nvml)


def test_real_no_gpu_path_reports_once_and_keeps_sampling_host() -> None:
    sampler = Sampler()  # the real pynvml; this machine has no NVIDIA driver
    if sampler.gpu_message is None:
        pytest.skip("an NVIDIA GPU is present here")
    assert "no GPU" in sampler.gpu_message
    first, second = sampler.sample(), sampler.sample()
    assert first.gpus == [] and second.gpus == []
    assert second.host.ram_total_mb > 0 and 0 <= second.host.cpu_pct <= 100 * 64


def test_gpu_failing_mid_run_falls_back_to_host() -> None:
    nvml = FakeNvml()
    sampler = Sampler(NvmlSource(nvml))

    def broken(handle: int) -> Any:
        raise FakeNvmlError("GPU is lost")

    nvml.nvmlDeviceGetMemoryInfo = broken  # type: ignore[method-assign]
    sample = sampler.sample()
    assert sample.gpus == [] and sample.gpu_message is not None and "GPU is lost" in sample.gpu_message
    assert sampler.sample().gpus == []
