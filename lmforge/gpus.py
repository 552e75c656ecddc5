"""GPU presets: datasheet peak FLOP/s, memory and power, with typical rent and purchase prices.

The one table of chips: `lmforge plan` prices a run on a preset (plan/hardware.py), and training's
MFU divides by the datasheet peak of the CUDA device it runs on (`device_gpu`). It imports only
`errors`, so both `train` and `plan` may use it. Prices move quickly; they are a snapshot with
their sources, to be overridden by the user.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass

from lmforge.errors import LmforgeError


@dataclass(frozen=True)
class GPU:
    name: str  # the preset's key, e.g. "h100"
    label: str  # what it is
    peak_flops: float  # dense BF16 tensor-core FLOP/s (the datasheets print 2x that "with sparsity")
    memory_gb: float  # device memory as marketed, in GB (1e9 bytes; conservative for the 'GiB' parts)
    power_w: float  # board power (TDP), W
    rent_per_hour: tuple[float, float]  # typical on-demand $ per GPU-hour, cheaper to dearer clouds
    price: float  # typical purchase price of one GPU, $ (the card alone: no server, network, building)
    sources: str  # where the numbers come from

    def to_dict(self) -> dict:
        return asdict(self)


_A100_SPEC = (
    "NVIDIA A100 Tensor Core GPU datasheet (nvidia.com, 2021): BF16 312 TFLOPS dense (624 sparse), 400 W SXM"
)
_H100_SPEC = (
    "NVIDIA H100 Tensor Core GPU datasheet (nvidia.com, 2023): SXM BF16 1,979 TFLOPS with sparsity = 989 "
    "dense, 80 GB HBM3, up to 700 W"
)
_RENT_2026 = (
    "On-demand rent: mercatus-ai.com/blog/cloud-gpu-pricing (May 2026, long-tail to specialty clouds) and "
    "pricegpu.pages.dev/blog/h100-vs-a100-cloud-price (early 2026)"
)
_PRICE_2026 = (
    "Purchase: aiinframap.com/tools/chips/h100-vs-h200-vs-b200-tco (mid-2026 street prices, +/-20-40%)"
)

GPUS: dict[str, GPU] = {
    g.name: g
    for g in [
        GPU(name="a100-40gb", label="NVIDIA A100 SXM4 40GB", peak_flops=312e12, memory_gb=40, power_w=400,
            rent_per_hour=(1.0, 2.0), price=10_000,
            sources=f"{_A100_SPEC}, 40 GB HBM2. Rent $1-2/GPU-hour and ~$10,000 to buy: Shaw Talebi, "
            "'How to Build an LLM from Scratch' (Towards Data Science, 2023)"),
        GPU(name="a100-80gb", label="NVIDIA A100 SXM4 80GB", peak_flops=312e12, memory_gb=80, power_w=400,
            rent_per_hour=(1.1, 2.5), price=15_000,
            sources=f"{_A100_SPEC}, 80 GB HBM2e. {_RENT_2026}: $1.10-1.50 specialty, $1.49-2.49 typical. "
            "Purchase: mercatus-ai.com/blog/a100-vs-h100-vs-h200 ($8-15K street price, 2026)"),
        GPU(name="h100", label="NVIDIA H100 SXM5 80GB", peak_flops=989e12, memory_gb=80, power_w=700,
            rent_per_hour=(2.0, 4.0), price=30_000,
            sources=f"{_H100_SPEC}. {_RENT_2026}: $1.99-3.50 outside hyperscalers, $2.49-3.99 typical. "
            f"{_PRICE_2026}: ~$30,000"),
        GPU(name="h200", label="NVIDIA H200 SXM 141GB", peak_flops=989e12, memory_gb=141, power_w=700,
            rent_per_hour=(2.5, 4.5), price=35_000,
            sources="NVIDIA H200 Tensor Core GPU datasheet (nvidia.com, 2024): BF16 1,979 TFLOPS "
            f"with sparsity = 989 dense, 141 GB HBM3e, up to 700 W. {_RENT_2026}: $2.50-3.50 long-tail, "
            f"$3.50-4.50 specialty. {_PRICE_2026}: ~$35,000"),
    ]
}  # fmt: skip
_ALIASES = {"h100-sxm": "h100", "h100-80gb": "h100", "h200-sxm": "h200", "h200-141gb": "h200"}


def get_gpu(name: str) -> GPU:
    """The preset called `name` (case-insensitive); LmforgeError listing the known ones otherwise."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key in GPUS:
        return GPUS[key]
    close = difflib.get_close_matches(key, list(GPUS) + list(_ALIASES), n=2, cutoff=0.5)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise LmforgeError(f"unknown GPU '{name}'{hint}; known GPUs: {', '.join(GPUS)}")


# CUDA device names (torch.cuda.get_device_name, e.g. "NVIDIA H100 80GB HBM3", "NVIDIA
# A100-SXM4-40GB") to presets. The PCIe and NVL boards of H100/H200 run at lower clocks and power
# than the SXM presets (H100 datasheet: PCIe 1,513 TFLOPS BF16 with sparsity = 756 dense), so they
# match no preset rather than overstate MFU's denominator; A100 PCIe and SXM share 312 TFLOPS.
_DEVICE_NAMES = (
    ("H200", "h200", ("PCIE", "NVL")),
    ("H100", "h100", ("PCIE", "NVL")),
    ("A100", "a100-80gb", ()),
)


def device_gpu(device_name: str) -> GPU | None:
    """The preset whose datasheet describes the CUDA device called `device_name`, else None."""
    upper = device_name.upper()
    for key, preset, other_parts in _DEVICE_NAMES:
        if key in upper:
            return None if any(part in upper for part in other_parts) else GPUS[preset]
    return None
