"""What a run reports: metrics.jsonl (always), TensorBoard (when installed), and a progress display.

The progress display is a tqdm bar on a terminal and one plain line every log_every steps
otherwise (CI, log files), so logs stay readable in both.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from lmforge.atomic import write_text_atomic
from lmforge.gpus import device_gpu


def peak_flops(device: torch.device) -> float | None:
    """Dense bf16 datasheet peak of a known CUDA device (lmforge/gpus.py), else None (no MFU shown);
    MFU as in PaLM (Chowdhery et al. 2022, App. B)."""
    if device.type != "cuda":
        return None
    gpu = device_gpu(torch.cuda.get_device_name(device))
    return gpu.peak_flops if gpu is not None else None


def _finite_or_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN/inf
    return v


class MetricsLog:
    """Appends one JSON object per line to <run>/metrics.jsonl, and mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: Path, tensorboard: bool = True, enabled: bool = True):
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled  # false on every rank but 0 of a distributed run: it writes nothing
        self._file = None
        self._tb = None
        self._tb_dir = run_dir / "tb"
        if tensorboard and enabled:
            self._tb = _summary_writer(self._tb_dir)

    def truncate_after(self, step: int) -> None:
        """Drop lines of steps after `step` (they are about to be re-run) and any torn last line;
        TensorBoard hides its events after `step` too (purge_step), so curves do not double back."""
        if self._tb is not None:
            self._tb.close()
            self._tb = _summary_writer(self._tb_dir, purge_step=step + 1)
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and rec.get("step", 0) <= step:
                kept.append(line)
        write_text_atomic(self.path, "".join(k + "\n" for k in kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 -- open for the whole run
        self._file.write(json.dumps({k: _finite_or_none(v) for k, v in record.items()}) + "\n")
        self._file.flush()
        if self._tb is not None:
            kind, step = record.get("kind", "train"), record["step"]
            for k, v in record.items():
                if k not in ("step", "kind") and isinstance(v, (int, float)) and v is not None:
                    self._tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _summary_writer(log_dir: Path, purge_step: int | None = None):
    try:
        from torch.utils.tensorboard import SummaryWriter  # needs the `tensorboard` package
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """A tqdm bar (terminal) or plain lines (anything else) showing step/total, loss, lr, tokens/s, ETA."""

    def __init__(self, total_steps: int, start_step: int, mode: str = "auto", enabled: bool = True):
        self.total = total_steps
        self.enabled = enabled  # false on every rank but 0 of a distributed run: it prints nothing
        use_bar = enabled and (mode == "bar" or (mode == "auto" and sys.stdout.isatty()))
        self._bar = None
        if use_bar:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, file=sys.stdout
            )

    def step(self, step: int, m: dict[str, Any], eta_s: float) -> None:
        """Called every log_every steps with the train metrics record."""
        if not self.enabled:
            return
        parts = [
            f"loss {_fmt(m.get('loss'), '.4f')}",
            f"lr {m['lr']:.2e}",
            f"gnorm {_fmt(m.get('grad_norm'), '.2f')}",
            f"{m['tokens_per_s']:,.0f} tok/s",
        ]
        if m.get("mfu") is not None:
            parts.append(f"mfu {100 * m['mfu']:.1f}%")
        if m.get("mem_gb") is not None:
            parts.append(f"mem {m['mem_gb']:.1f}GB")
        if self._bar is not None:
            self._bar.set_postfix_str(" | ".join(parts), refresh=False)
            self._bar.update(step - self._bar.n)
        else:
            width = len(str(self.total))
            print(
                f"step {step:>{width}}/{self.total} | "
                + " | ".join(parts)
                + f" | elapsed {format_duration(m['elapsed'])} | eta {format_duration(eta_s)}",
                flush=True,
            )

    def message(self, text: str, stream=None) -> None:
        """A line that does not break the bar."""
        if not self.enabled:
            return
        stream = stream or sys.stdout
        if self._bar is not None:
            self._bar.write(text, file=stream)
        else:
            print(text, file=stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _fmt(v: float | None, spec: str) -> str:
    return "nan" if v is None or not math.isfinite(v) else format(v, spec)


class Throughput:
    """Tokens/s and seconds/step over the last logging interval."""

    def __init__(self, tokens: int, step: int):
        self._t, self._tokens, self._step = time.perf_counter(), tokens, step

    def exclude(self, seconds: float) -> None:
        """Leave time spent on validation/checkpoints out of the rate."""
        self._t += seconds

    def tick(self, tokens: int, step: int) -> tuple[float, float]:
        now = time.perf_counter()
        dt = max(now - self._t, 1e-9)
        tok_s = (tokens - self._tokens) / dt
        s_per_step = dt / max(step - self._step, 1)
        self._t, self._tokens, self._step = now, tokens, step
        return tok_s, s_per_step
