"""Sizing and cost: how big, how long, how much (`lmforge plan`).

chinchilla.py     compute-optimal N, D, C (Hoffmann et al. 2022 Table 3) and the eq. 10 loss
hardware.py       GPU-hours, wall time, rent, purchase, energy on a preset (lmforge/gpus.py); MFU peaks
memory.py         bytes per GPU (weights, grads, AdamW, activations) under dp/tp/pp/ZeRO layouts
memprobe.py       the child process that measures a real CPU training step's peak memory
shapes.py         a Llama-style shape for a bare parameter count
fit.py            scaling-law fits: IsoFLOP minima (approach 2) and L(N, D) (approach 3)
sweep.py          `lmforge plan sweep`: train an IsoFLOP grid of small models, resumably
sweep_report.py   the sweep's fit.json, isoflop.png and sweep.md
report.py         the compute section of a training run's report.md
cli.py            `lmforge plan` arguments; display.py its printed tables
"""

from lmforge.gpus import GPUS, get_gpu
from lmforge.plan.chinchilla import Sizing, chinchilla_loss, optimal_from_compute, size
from lmforge.plan.cli import add_parser, run
from lmforge.plan.hardware import estimate_cost
from lmforge.plan.memory import Layout, smallest_layout, training_memory
from lmforge.plan.report import report_section

__all__ = [
    "GPUS",
    "Layout",
    "Sizing",
    "add_parser",
    "chinchilla_loss",
    "estimate_cost",
    "get_gpu",
    "optimal_from_compute",
    "report_section",
    "run",
    "size",
    "smallest_layout",
    "training_memory",
]
