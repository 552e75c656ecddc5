"""The memory model: layout arithmetic, the smallest fitting layout, and a real CPU run's peak."""

from __future__ import annotations

import pytest

from lmforge.errors import LmforgeError
from lmforge.model.config import ModelConfig
from lmforge.plan.memory import Layout, measure_cpu_peak, smallest_layout, training_memory
from lmforge.plan.shapes import llama_shape, shape_for_params


def test_states_follow_zero_and_model_parallel_splits():
    m = llama_shape(32, 4096)  # Llama 2 7B's shape (untied 32K vocabulary)
    n = m.num_params()
    base = training_memory(m, 2048, 1, Layout(), "bf16")
    assert (base["weights"], base["gradients"], base["optimizer"]) == pytest.approx((2 * n, 2 * n, 12 * n))
    assert training_memory(m, 2048, 1, Layout(), "fp32")["optimizer"] == pytest.approx(8 * n)  # AdamW m, v
    z1 = training_memory(m, 2048, 1, Layout(dp=8, zero=1))
    z2 = training_memory(m, 2048, 1, Layout(dp=8, zero=2))
    z3 = training_memory(m, 2048, 1, Layout(dp=8, zero=3))
    assert z1["optimizer"] == pytest.approx(12 * n / 8) and z1["gradients"] == pytest.approx(2 * n)
    assert z2["gradients"] == pytest.approx(2 * n / 8) and z2["weights"] == pytest.approx(2 * n)
    assert z3["weights"] == pytest.approx(2 * n / 8) and z3["fsdp_gathered"] > 0
    tp = training_memory(m, 2048, 1, Layout(tp=4, pp=2))
    assert tp["weights"] == pytest.approx(2 * n / 8)
    assert tp["activations"] < base["activations"] / 3  # tensor (sequence) parallel splits activations
    ckpt = training_memory(m, 2048, 1, Layout(), checkpointing=True)
    assert ckpt["activations"] < base["activations"] / 3
    assert training_memory(m, 2048, 2, Layout())["activations"] == pytest.approx(2 * base["activations"])
    with pytest.raises(LmforgeError, match="tp=3 must divide"):
        training_memory(m, 2048, 1, Layout(tp=3))


def test_smallest_layout_that_fits():
    m = shape_for_params(7e9)
    assert (
        abs(m.num_params() / 7e9 - 1) < 0.05 and m.n_layer % 4 == 0
    )  # 16 bytes/param x 7B = 112 GB of states: more than one 80 GB GPU
    layout, mem = smallest_layout(m, 80, seq_len=2048)
    assert layout.gpus == 2 and mem["total"] <= 80e9 * 0.9
    assert (
        smallest_layout(shape_for_params(5e9), 141, seq_len=2048)[0].gpus == 1
    )  # 80 GB of states on an H200
    small = ModelConfig(n_layer=2, n_embd=64, n_head=2, vocab_size=512, block_size=128)
    assert smallest_layout(small, 40, seq_len=128)[0] == Layout()
    with pytest.raises(LmforgeError, match="no data/tensor/pipeline/FSDP layout fits"):
        smallest_layout(m, 80, seq_len=2048, num_gpus=1)


def test_memory_model_matches_a_real_cpu_training_step():
    """Predicted gradients + AdamW state + activations against the peak resident memory that a real
    fp32 training step adds, measured in a fresh process (see memory.measure_cpu_peak): within 25%."""
    cfg = ModelConfig(
        vocab_size=1024,
        block_size=128,
        n_layer=2,
        n_head=4,
        n_embd=128,
        activation="swiglu",
        norm="rmsnorm",
        pos="rope",
        bias=False,
    )
    try:
        measured = measure_cpu_peak(cfg, seq_len=128, micro_batch=8)
    except LmforgeError as e:
        if "clear_refs" in str(e):
            pytest.skip(str(e))  # not Linux: no way to reset the peak-RSS mark
        raise
    predicted = training_memory(cfg, 128, 8, Layout(), precision="fp32")
    expected = predicted["total"] - predicted["weights"]  # the weights exist before the measured steps
    assert measured["peak_bytes"] > 10e6  # the step really allocated (activations are ~30 MB here)
    assert abs(expected / measured["peak_bytes"] - 1) < 0.25, (expected, measured)


@pytest.mark.parametrize(
    "shape",
    [
        {"activation": "swiglu", "norm": "rmsnorm", "pos": "rope", "bias": False},
        {"activation": "gelu", "bias": True, "n_kv_head": 2},
        {"kind": "encoder-decoder", "n_encoder_layer": 1, "activation": "relu"},
    ],
    ids=["llama-like", "gpt2-like-gqa", "encoder-decoder"],
)
def test_muon_state_counts_what_the_real_optimizer_keeps(shape):
    """Muon's share of the plan equals the parameters train.optimizer=muon hands to Muon, and its
    optimizer bytes (fp32) equal the state tensors the real MuonAdamW holds after a step."""
    import torch

    from lmforge.model import Transformer
    from lmforge.plan.memory import block_matrix_params
    from lmforge.train.config import TrainConfig
    from lmforge.train.optim import build_optimizer

    cfg = ModelConfig(vocab_size=256, block_size=32, n_layer=2, n_head=4, n_embd=64, **shape)
    model = Transformer(cfg)
    opt = build_optimizer(model, TrainConfig(optimizer="muon"), torch.device("cpu"))
    assert block_matrix_params(cfg) == sum(
        p.numel() for g in opt.parts["muon"].param_groups for p in g["params"]
    )
    x = torch.randint(0, 256, (2, 16))
    extra = {"decoder_input_ids": x} if cfg.kind == "encoder-decoder" else {}
    model(x, x, **extra)[1].backward()
    opt.step()
    held = sum(
        t.numel() * t.element_size()
        for part in opt.parts.values()
        for s in part.state.values()
        for t in s.values()
        if torch.is_tensor(t) and t.dim() > 0  # not Adam's scalar step counters
    )
    predicted = training_memory(cfg, 32, 1, Layout(), "fp32", optimizer="muon")["optimizer"]
    assert predicted == pytest.approx(held)
    adamw = training_memory(cfg, 32, 1, Layout(), "fp32")["optimizer"]
    assert adamw - predicted == pytest.approx(4 * block_matrix_params(cfg))
    with pytest.raises(LmforgeError, match="optimizer must be one of"):
        training_memory(cfg, 32, 1, Layout(), "fp32", optimizer="sgd")
