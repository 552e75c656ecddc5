"""Device and numeric precision: pick them, and give the autocast context and grad scaler.

Weights and optimizer state stay fp32 ("master weights"); bf16/fp16 apply to the matmuls through
autocast (Micikevicius et al. 2018, "Mixed Precision Training"). fp16 needs loss scaling because
its exponent range underflows small gradients; bf16 has fp32's range and needs none.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

import torch

from lmforge.errors import ConfigError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """auto -> cuda if available, else mps, else cpu. An unavailable explicit device is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"train.device='{name}' is not a device (use auto, cpu, cuda, cuda:N or mps)"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device='{name}' but CUDA is not available; use train.device=cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"train.device='{name}' but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"train.device='{name}' but MPS is not available; use train.device=cpu")
    return device


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """auto -> bf16 on a CUDA device that supports it (Ampere+), else fp32."""
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if precision not in DTYPES:
        raise ConfigError(f"train.precision must be one of auto, {', '.join(DTYPES)}, got '{precision}'")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            "train.precision=bf16 but this GPU has no bf16 support (pre-Ampere); use fp16 or fp32"
        )
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"train.precision=fp16 needs a CUDA device (loss scaling), but the device is "
            f"{device.type}; use train.precision=bf16 or fp32"
        )
    return DTYPES[precision]


def autocast(device: torch.device, dtype: torch.dtype) -> AbstractContextManager:
    """Mixed-precision context for forward passes; a no-op for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype) -> torch.amp.GradScaler:
    """Dynamic loss scaling, enabled only for fp16 (on CUDA); otherwise a pass-through."""
    return torch.amp.GradScaler(device.type, enabled=(dtype == torch.float16 and device.type == "cuda"))


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]
