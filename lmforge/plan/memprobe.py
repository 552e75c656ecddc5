"""Child process of `memory.measure_cpu_peak`: real fp32 training steps, peak resident memory.

    python -m lmforge.plan.memprobe '{"model": {...}, "seq_len": 128, "micro_batch": 8, "steps": 2}'

Prints one JSON line: {"baseline_bytes", "peak_bytes", "params_bytes", "optimizer_state_bytes"}.
"""

from __future__ import annotations

import gc
import json
import sys

import torch

from lmforge.model import ModelConfig, Transformer
from lmforge.train.config import TrainConfig
from lmforge.train.optim import build_optimizer
from lmforge.typed_config import from_dict


def _status_bytes(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"/proc/self/status has no {key}")


def main(spec: dict) -> dict:

    def step(model, optimizer, x, y) -> None:  # the statements of lmforge.train.loop's inner step
        extra = (
            {"decoder_input_ids": x} if model.cfg.kind == "encoder-decoder" else {}
        )  # source as long as target
        _, loss = model(x, y, **extra)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def setup(cfg, B, T):
        model = Transformer(cfg)
        model.train()
        train = TrainConfig(optimizer=spec.get("optimizer", "adamw"))
        optimizer = build_optimizer(model, train, torch.device("cpu"))
        x, y = torch.randint(0, cfg.vocab_size, (2, B, T))
        return model, optimizer, x, y

    torch.manual_seed(0)
    cfg = from_dict(ModelConfig, spec["model"])
    B, T = spec["micro_batch"], spec["seq_len"]
    # Warm up on a one-layer copy: the first step pages in the kernels' code and creates lazy
    # globals, a constant ~10-20 MB of resident memory that is not the model's.
    step(*setup(from_dict(ModelConfig, {**spec["model"], "n_layer": 1}), 1, min(T, 16)))
    model, optimizer, x, y = setup(cfg, B, T)
    gc.collect()
    baseline = _status_bytes("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # reset VmHWM (the peak resident set) to the current resident set
    except OSError as e:
        raise SystemExit(f"cannot reset the peak-RSS mark (/proc/self/clear_refs: {e.strerror}); Linux only")
    for _ in range(spec["steps"]):
        step(model, optimizer, x, y)
    peak = _status_bytes("VmHWM")
    parts = optimizer.parts.values() if hasattr(optimizer, "parts") else [optimizer]  # MuonAdamW: two
    opt_bytes = sum(
        t.numel() * t.element_size()
        for part in parts
        for s in part.state.values()
        for t in s.values()
        if torch.is_tensor(t)
    )
    return {
        "baseline_bytes": baseline,
        "peak_bytes": peak - baseline,
        "params_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "optimizer_state_bytes": opt_bytes,
    }


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
