"""GPU and host sampling: NVML for every GPU, psutil for the host.

With no driver or no GPU, NVML's absence is reported once (``gpu_message``) and sampling goes on with
host CPU/RAM alone: the supervisor never fails for lack of a GPU. NVML sits behind :class:`GpuSource`
so the GPU path is testable on machines without one.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import psutil

from heidi_engine.bus.state import GpuInfo, HostInfo, SystemSample

log = logging.getLogger(__name__)
_MIB = 1024 * 1024


class GpuSource(Protocol):
    """Where GPU readings come from; raises ``RuntimeError`` when none can be read."""

    def read(self) -> list[GpuInfo]: ...

    def close(self) -> None: ...


class NvmlSource:
    """Every GPU through nvidia-ml-py. Fields a device does not support are left ``None``."""

    def __init__(self, nvml: Any = None) -> None:
        if nvml is None:
            import pynvml

            nvml = pynvml
        self._nvml = nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            raise RuntimeError(f"no NVIDIA GPU available ({type(exc).__name__}: {exc})") from None
        self._handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        if not self._handles:
            nvml.nvmlShutdown()
            raise RuntimeError("NVML found no GPU")

    def _optional(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self._nvml.NVMLError:
            return None

    def read(self) -> list[GpuInfo]:
        """One reading per GPU."""
        nvml = self._nvml
        gpus = []
        for index, handle in enumerate(self._handles):
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            util = self._optional(nvml.nvmlDeviceGetUtilizationRates, handle)
            temp = self._optional(nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)
            power = self._optional(nvml.nvmlDeviceGetPowerUsage, handle)
            name = self._optional(nvml.nvmlDeviceGetName, handle) or f"GPU {index}"
            gpus.append(
                GpuInfo(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    vram_used_mb=round(memory.used / _MIB, 1),
                    vram_total_mb=round(memory.total / _MIB, 1),
                    util_pct=None if util is None else float(util.gpu),
                    temperature_c=None if temp is None else float(temp),
                    power_w=None if power is None else power / 1000.0,
                )
            )
        return gpus

    def close(self) -> None:
        """Release NVML."""
        try:
            self._nvml.nvmlShutdown()
        except self._nvml.NVMLError:
            pass


class Sampler:
    """Produces :class:`SystemSample` readings; falls back to host-only when no GPU can be read."""

    def __init__(self, gpu_source: GpuSource | None = None, *, try_nvml: bool = True) -> None:
        self.gpu_message: str | None = None
        self._gpu = gpu_source
        if self._gpu is None and try_nvml:
            try:
                self._gpu = NvmlSource()
            except (RuntimeError, ImportError, OSError) as exc:
                self.gpu_message = f"no GPU: {exc}; showing host CPU/RAM"
                log.info("%s", self.gpu_message)
        elif self._gpu is None:
            self.gpu_message = "no GPU sampling configured; showing host CPU/RAM"
        psutil.cpu_percent(None)  # the first reading is meaningless; prime it

    def sample(self) -> SystemSample:
        """A reading of every GPU and the host."""
        gpus: list[GpuInfo] = []
        if self._gpu is not None:
            try:
                gpus = self._gpu.read()
            except Exception as exc:  # a driver error mid-run must not stop the supervisor
                self.gpu_message = f"GPU reading failed: {exc}; showing host CPU/RAM"
                log.warning("%s", self.gpu_message)
                self._gpu.close()
                self._gpu = None
        memory = psutil.virtual_memory()
        host = HostInfo(
            cpu_pct=psutil.cpu_percent(None),
            ram_used_mb=round((memory.total - memory.available) / _MIB, 1),
            ram_total_mb=round(memory.total / _MIB, 1),
        )
        return SystemSample(gpus=gpus, host=host, gpu_message=self.gpu_message)

    def close(self) -> None:
        """Release the GPU source."""
        if self._gpu is not None:
            self._gpu.close()
