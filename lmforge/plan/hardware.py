"""GPUs, time, money and energy: what a planned number of training FLOPs costs.

    GPU-seconds = FLOPs / (peak FLOP/s x MFU)

MFU, model FLOPs utilisation, is the share of the chip's peak that the model's own FLOPs reach
(PaLM, Chowdhery et al. 2022, App. B). Published large runs reach 40-50%: PaLM 540B 46.2% (PaLM
Table 3); Llama 2 70B took 1,720,320 A100-hours for 2T tokens (Touvron et al. 2023, Table 2),
6 x 69B x 2T / (1.72M h x 3600 s x 312 TFLOP/s) = 43%. The default, 40%, sits just below.

Energy = GPU-hours x board power x PUE, the convention of the Llama 2 model card (GPU power, PUE
adjusted) and of Patterson et al. 2021 ("Carbon Emissions and Large Neural Network Training").
It leaves out the host CPUs, network and storage, which are not negligible (a DGX A100 draws
6.5 kW for 8 x 400 W GPUs).

Prices move quickly; they are a snapshot with their sources, to be overridden by the user.
"""

from __future__ import annotations

import difflib
import functools
import time
from dataclasses import asdict, dataclass

from lmforge.errors import LmforgeError

DEFAULT_MFU = 0.40
# Power usage effectiveness (facility energy / IT energy). 1.2 is typical of a modern AI data
# centre (aiinframap.com H100/H200/B200 TCO assumptions, 2026); Google and Microsoft report ~1.1
# (Patterson et al. 2021, Table 4); older facilities run 1.4-1.6.
DEFAULT_PUE = 1.2
# $ per MWh of electricity: the figure of the published estimate this project reproduces (Shaw
# Talebi, "How to Build an LLM from Scratch", Towards Data Science, 2023: "$100 per megawatt hour").
DEFAULT_ENERGY_PRICE = 100.0


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
    "NVIDIA H100 Tensor Core GPU datasheet (nvidia.com, 2023): SXM BF16 1,979 TFLOPS with sparsity = 989 dense, "
    "80 GB HBM3, up to 700 W"
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
            sources="NVIDIA H200 Tensor Core GPU datasheet (nvidia.com, 2024): BF16 1,979 TFLOPS with sparsity "
            f"= 989 dense, 141 GB HBM3e, up to 700 W. {_RENT_2026}: $2.50-3.50 long-tail, $3.50-4.50 "
            f"specialty. {_PRICE_2026}: ~$35,000"),
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


def check_mfu(mfu: float) -> float:
    if not isinstance(mfu, (int, float)) or isinstance(mfu, bool) or not 0.0 < mfu <= 1.0:
        raise LmforgeError(f"MFU must be in (0, 1], got {mfu!r} (0.4 means 40% of the GPU's peak)")
    return float(mfu)


def estimate_cost(
    flops: float,
    gpu: GPU,
    num_gpus: int = 1,
    mfu: float = DEFAULT_MFU,
    pue: float = DEFAULT_PUE,
    energy_price: float = DEFAULT_ENERGY_PRICE,
) -> dict:
    """Time, rent, purchase and energy of `flops` training FLOPs on `num_gpus` x `gpu` at `mfu`."""
    check_mfu(mfu)
    if not flops > 0:
        raise LmforgeError(f"training FLOPs must be positive, got {flops!r}")
    if not isinstance(num_gpus, int) or num_gpus < 1:
        raise LmforgeError(f"the number of GPUs must be a positive integer, got {num_gpus!r}")
    if not pue >= 1.0:
        raise LmforgeError(f"PUE must be at least 1 (facility energy / IT energy), got {pue!r}")
    if not energy_price >= 0:
        raise LmforgeError(f"the energy price must be >= 0 $/MWh, got {energy_price!r}")
    gpu_hours = flops / (gpu.peak_flops * mfu) / 3600.0
    energy_mwh = gpu_hours * gpu.power_w * pue / 1e6
    return {
        "gpu": gpu.name,
        "num_gpus": num_gpus,
        "mfu": mfu,
        "flops": flops,
        "gpu_hours": gpu_hours,
        "wall_hours": gpu_hours / num_gpus,
        "rent_low": gpu_hours * gpu.rent_per_hour[0],
        "rent_high": gpu_hours * gpu.rent_per_hour[1],
        "purchase": num_gpus * gpu.price,
        "energy_mwh": energy_mwh,
        "pue": pue,
        "energy_cost": energy_mwh * energy_price,
        "energy_price": energy_price,
    }


@functools.lru_cache(maxsize=8)
def matmul_peak(device: str = "cpu", dtype_name: str = "fp32", n: int = 0) -> float:
    """Measured FLOP/s of a large square matmul on this device: the practical peak used as MFU's
    denominator where no datasheet applies (a CPU). Best of a few timed repeats (cached)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    dev = torch.device(device)
    n = n or (2048 if dev.type == "cpu" else 8192)  # 2048: as bench/train_throughput.py
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    best = float("inf")
    for i in range(4):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        (a @ b).sum().item()  # .item() waits for the device
        dt = time.perf_counter() - t0
        if i:  # the first call warms up threads and kernels
            best = min(best, dt)
    return 2.0 * n**3 / best


def device_peak(device: str = "cpu") -> tuple[float, str]:
    """(peak FLOP/s, where it comes from) for MFU on `device`: the datasheet's dense BF16 figure for
    a known GPU, else a measured fp32 matmul on this machine."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(torch.device(device))
        for key, gpu in (("H200", GPUS["h200"]), ("H100", GPUS["h100"]), ("A100", GPUS["a100-80gb"])):
            if key in name and "PCIe" not in name:
                return gpu.peak_flops, f"{gpu.label} datasheet, dense BF16"
        return matmul_peak(device, "bf16"), f"measured bf16 matmul on {name}"
    return matmul_peak("cpu", "fp32"), "measured fp32 matmul on this CPU"
