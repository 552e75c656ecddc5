"""Time, money and energy: what a planned number of training FLOPs costs on a GPU preset
(lmforge/gpus.py), and the measured peak that MFU divides by where no datasheet applies.

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

import functools
import time

from lmforge.errors import LmforgeError
from lmforge.gpus import GPU, device_gpu

DEFAULT_MFU = 0.40
# Power usage effectiveness (facility energy / IT energy). 1.2 is typical of a modern AI data
# centre (aiinframap.com H100/H200/B200 TCO assumptions, 2026); Google and Microsoft report ~1.1
# (Patterson et al. 2021, Table 4); older facilities run 1.4-1.6.
DEFAULT_PUE = 1.2
# $ per MWh of electricity: the figure of the published estimate this project reproduces (Shaw
# Talebi, "How to Build an LLM from Scratch", Towards Data Science, 2023: "$100 per megawatt hour").
DEFAULT_ENERGY_PRICE = 100.0


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
    a known GPU (lmforge.gpus, as training's MFU uses), else a measured matmul on this machine."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name(torch.device(device))
        gpu = device_gpu(name)
        if gpu is not None:
            return gpu.peak_flops, f"{gpu.label} datasheet, dense BF16"
        return matmul_peak(device, "bf16"), f"measured bf16 matmul on {name}"
    return matmul_peak("cpu", "fp32"), "measured fp32 matmul on this CPU"
