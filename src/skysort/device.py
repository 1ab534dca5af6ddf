"""Where models run: cores, worker processes, the device, and bfloat16 autocast.

torch is imported only by the functions that need it, so that prediction with ONNX
Runtime on a machine without a GPU never pays for importing it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from skysort.errors import ConfigError

if TYPE_CHECKING:
    import torch


def cpu_count() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


#: The most worker processes skysort starts by default, however many cores there are.
MAX_WORKERS = 32


def default_workers() -> int:
    """Worker processes (decoding, or decoding and running an exported model): one per
    core, at most :data:`MAX_WORKERS`, none on a one-core machine. The one policy for
    training, embedding, evaluation and prediction."""
    cores = cpu_count()
    return min(MAX_WORKERS, cores) if cores > 1 else 0


def gpu_present() -> bool:
    """Whether the machine may have a GPU torch can use (an NVIDIA or ROCm driver's
    device files): a quick check that needs no torch."""
    return any(Path(p).exists() for p in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/kfd",
                                          "/proc/driver/nvidia/version"))


#: Device names skysort accepts: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, ``mps``.
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device(name: str) -> str:
    """``name`` if it is a device skysort can run on, else a ConfigError saying which are."""
    if not isinstance(name, str) or not DEVICE_PATTERN.fullmatch(name):
        raise ConfigError(f"device={name!r}: must be auto, cpu, cuda, cuda:N (a GPU by "
                          "number) or mps")
    return name


def resolve_device(name: str) -> torch.device:
    """``auto``: a CUDA (or ROCm) GPU when torch sees one, else the CPU. A GPU that was
    asked for by name and is not there is a ConfigError, not a crash halfway."""
    import torch

    check_device(name)
    if name == "auto":
        return torch.device("cuda" if gpu_present() and torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise ConfigError(f"device={name!r}: this machine has {count} CUDA GPU(s) that "
                              "torch can use; pass device=auto or cpu")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={name!r}: Apple's MPS is not available here; pass "
                          "device=auto or cpu")
    return device


def auto_is_cpu(name: str) -> bool:
    """Whether device ``name`` is (or ``auto`` resolves to) the CPU, importing torch only
    when a GPU may be present."""
    check_device(name)
    if name == "cpu" or (name == "auto" and not gpu_present()):
        return True
    return resolve_device(name).type == "cpu"


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for training: bfloat16 where the hardware runs it natively."""
    import torch

    if name == "fp32":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    native = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")() in (
        "AVX512_BF16", "AMX") or _cpu_has_bf16()
    return torch.bfloat16 if name == "bf16" or native else None


def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            return any("avx512_bf16" in line or "amx_bf16" in line for line in fh)
    except OSError:
        return False
