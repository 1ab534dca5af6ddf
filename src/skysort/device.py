"""Where models run: the device, and whether bfloat16 autocast pays off on it."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for training: bfloat16 where the hardware runs it natively."""
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
