"""The memory model against measured peaks: predicted / measured for several CPU training steps.

    .venv/bin/python bench/plan_memory.py

For each shape: one real fp32 training step (forward, backward, AdamW, zero_grad) in a fresh
process, peak resident memory read from the kernel (lmforge.plan.memory.measure_cpu_peak), against
lmforge.plan.memory.training_memory's gradients + optimizer state + activations (the weights exist
before the measured step). Prints one row per shape and the ratio predicted / measured.
"""

from __future__ import annotations

from lmforge.model import ModelConfig
from lmforge.plan.memory import measure_cpu_peak, training_memory

LLAMA = {"activation": "swiglu", "norm": "rmsnorm", "pos": "rope", "bias": False}
SHAPES = [  # (label, model config, micro-batch, seq_len)
    (
        "tiny recipe (4x256, SwiGLU, RoPE)",
        dict(vocab_size=2048, block_size=256, n_layer=4, n_head=4, n_embd=256, **LLAMA),
        8,
        256,
    ),
    (
        "2x128 SwiGLU, RoPE",
        dict(vocab_size=1024, block_size=128, n_layer=2, n_head=4, n_embd=128, **LLAMA),
        8,
        128,
    ),
    (
        "2x128 GPT-2 style (GELU, LayerNorm, learned)",
        {"vocab_size": 1024, "block_size": 128, "n_layer": 2, "n_head": 2, "n_embd": 128},
        8,
        128,
    ),
    (
        "2x128 with dropout 0.1 (unfused attention)",
        {
            "vocab_size": 1024,
            "block_size": 128,
            "n_layer": 2,
            "n_head": 4,
            "n_embd": 128,
            "resid_dropout": 0.1,
            "attn_dropout": 0.1,
        },
        8,
        128,
    ),
    (
        "2x128 ALiBi",
        {"vocab_size": 1024, "block_size": 128, "n_layer": 2, "n_head": 4, "n_embd": 128, "pos": "alibi"},
        8,
        128,
    ),
    (
        "2x128 encoder-decoder",
        {
            "vocab_size": 1024,
            "block_size": 128,
            "n_layer": 2,
            "n_head": 4,
            "n_embd": 128,
            "kind": "encoder-decoder",
        },
        8,
        128,
    ),
    (
        "2x128 encoder, ReLU",
        {
            "vocab_size": 1024,
            "block_size": 128,
            "n_layer": 2,
            "n_head": 4,
            "n_embd": 128,
            "kind": "encoder",
            "activation": "relu",
        },
        8,
        128,
    ),
    (
        "6x384 GQA 6/2 heads",
        dict(vocab_size=4096, block_size=256, n_layer=6, n_head=6, n_kv_head=2, n_embd=384, **LLAMA),
        4,
        256,
    ),
]


def main() -> None:
    print(f"{'shape':<46} {'batch':>9} {'measured':>10} {'predicted':>10} {'ratio':>6}")
    ratios = []
    for label, kw, batch, seq in SHAPES:
        cfg = ModelConfig(**kw)
        measured = measure_cpu_peak(cfg, seq, batch)["peak_bytes"]
        pred = training_memory(cfg, seq, batch, precision="fp32")
        predicted = pred["total"] - pred["weights"]
        ratios.append(predicted / measured)
        print(
            f"{label:<46} {batch:>3} x {seq:<3} {measured / 1e6:>8.1f}MB {predicted / 1e6:>8.1f}MB "
            f"{ratios[-1]:>6.3f}"
        )
    print(f"ratio predicted / measured: min {min(ratios):.3f}, max {max(ratios):.3f}")


if __name__ == "__main__":
    main()
