"""Muon + AdamW (train.optimizer=muon): the step equals torch.optim.Muon's, Newton-Schulz
orthogonalises, the parameters split as intended, the schedule scales both learning rates, bad
values are refused, and a Muon run killed with SIGKILL resumes to the same losses.

The distributed cases (DDP, FSDP2, tensor and pipeline parallel) are in test_optim_dist.py.
"""

from __future__ import annotations

import math
import signal

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_train_loop import data, make_cfg, read_metrics, start_training, wait_for

from lmforge.config import RunConfig, from_dict
from lmforge.errors import ConfigError, LmforgeError
from lmforge.model import ModelConfig, Transformer
from lmforge.train.checkpoint import latest_checkpoint, load_model
from lmforge.train.config import TrainConfig
from lmforge.train.loop import train
from lmforge.train.muon import Muon, adjusted_lr, orthogonalize
from lmforge.train.optim import MuonAdamW, build_optimizer, set_lr
from lmforge.train.schedule import lr_at

__all__ = ["data"]  # the shared fixture
CPU = torch.device("cpu")


def tiny(**model) -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(vocab_size=64, n_layer=2, n_embd=16, n_head=2, block_size=8, **model))


# ---- the Muon step


@pytest.mark.parametrize("shape", [(16, 16), (48, 16), (16, 48)])
@pytest.mark.parametrize("nesterov", [True, False])
def test_step_equals_torch_muon_in_bfloat16(shape, nesterov):
    torch.manual_seed(1)
    start = torch.randn(shape)
    ours, theirs = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    kw = {
        "lr": 0.05,
        "weight_decay": 0.1,
        "momentum": 0.9,
        "nesterov": nesterov,
        "adjust_lr_fn": "match_rms_adamw",
    }
    a, b = Muon([ours], ns_dtype=torch.bfloat16, **kw), torch.optim.Muon([theirs], **kw)
    for _ in range(3):
        g = torch.randn(shape)
        ours.grad, theirs.grad = g.clone(), g.clone()
        a.step()
        b.step()
    assert torch.equal(ours, theirs)
    assert torch.equal(a.state[ours]["momentum_buffer"], b.state[theirs]["momentum_buffer"])
    assert not torch.equal(ours, start)


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(2, 48), cols=st.integers(2, 48), seed=st.integers(0, 2**16), scale=st.floats(1e-4, 1e4)
)
def test_newton_schulz_equalises_singular_values(rows, cols, seed, scale):
    g = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * scale
    o = orthogonalize(g, torch.float32)
    s = torch.linalg.svdvals(o)
    # Jordan's coefficients land singular values in about [0.7, 1.2], not exactly 1; a random
    # Gaussian matrix's smallest ones may stay lower, but the update keeps g's directions
    assert s.max() < 1.25 and s.median() > 0.6
    assert torch.sum(o * g) > 0
    assert o.shape == g.shape


def test_a_stack_of_matrices_is_orthogonalised_each_on_its_own():
    g = torch.randn(5, 24, 40, generator=torch.Generator().manual_seed(3))
    g[2] *= 1e3  # each matrix is normalised by its own norm, not the stack's
    together = orthogonalize(g, torch.float32)
    for i in range(5):
        torch.testing.assert_close(together[i], orthogonalize(g[i], torch.float32), rtol=1e-5, atol=1e-5)
    tall = orthogonalize(g.mT, torch.float32)
    torch.testing.assert_close(tall, together.mT, rtol=1e-5, atol=1e-5)


def test_step_over_many_matrices_equals_one_optimizer_per_matrix():
    torch.manual_seed(2)
    shapes = [(16, 16)] * 20 + [(48, 16)] * 3 + [(16, 48)]  # more than one batch of one shape
    ours = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    alone = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    together, singles = Muon(ours, lr=0.02), [Muon([p], lr=0.02) for p in alone]
    for _ in range(2):
        for a, b in zip(ours, alone):
            a.grad = torch.randn(a.shape)
            b.grad = a.grad.clone()
        together.step()
        for opt in singles:
            opt.step()
    for a, b in zip(ours, alone):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_adjusted_lr_scales_by_shape():
    assert adjusted_lr(0.02, "original", torch.Size([64, 16])) == pytest.approx(0.04)  # sqrt(64 / 16)
    assert adjusted_lr(0.02, "original", torch.Size([16, 64])) == pytest.approx(0.02)
    assert adjusted_lr(1e-3, "match_rms_adamw", torch.Size([16, 64])) == pytest.approx(1e-3 * 0.2 * 8)


# ---- Muon + AdamW


def test_muon_takes_block_matrices_and_adamw_the_rest():
    model = tiny()
    opt = build_optimizer(model, TrainConfig(optimizer="muon"), CPU)
    assert isinstance(opt, MuonAdamW)
    muon = {id(p) for g in opt.parts["muon"].param_groups for p in g["params"]}
    adamw = {id(p) for g in opt.parts["adamw"].param_groups for p in g["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert muon.isdisjoint(adamw) and muon | adamw == set(names)  # every parameter once
    assert sorted(names[i].split(".", 2)[2] for i in muon if names[i].startswith("blocks.0.")) == [
        "attn.k_proj.weight",
        "attn.o_proj.weight",
        "attn.q_proj.weight",
        "attn.v_proj.weight",
        "mlp.down_proj.weight",
        "mlp.up_proj.weight",
    ]
    assert all(names[i].startswith("blocks.") for i in muon)
    assert id(model.tok_emb.weight) in adamw and id(model.norm_f.weight) in adamw
    assert isinstance(opt.parts["adamw"], torch.optim.AdamW)


def test_encoder_decoder_cross_attention_is_muon_and_lora_factors_are_not():
    model = tiny(kind="encoder-decoder")
    opt = build_optimizer(model, TrainConfig(optimizer="muon"), CPU)
    muon = {id(p) for g in opt.parts["muon"].param_groups for p in g["params"]}
    names = [n for n, p in model.named_parameters() if id(p) in muon]
    assert any(n.startswith("encoder_blocks.") for n in names)
    assert any("cross_attn" in n for n in names)

    from lmforge.tune.config import LoraConfig
    from lmforge.tune.lora import apply_lora

    lora = tiny()
    apply_lora(lora, LoraConfig())
    opt = build_optimizer(lora, TrainConfig(optimizer="muon"), CPU)
    assert list(opt.parts) == ["adamw"]  # the adapters are all that trains, and they stay with AdamW


def test_schedule_scales_both_learning_rates_keeping_their_ratio():
    cfg = TrainConfig(optimizer="muon", lr=1e-3, muon_lr=0.02, warmup_steps=3, max_steps=20)
    opt = build_optimizer(tiny(), cfg, CPU)
    for step in (0, 2, 10, 19):
        set_lr(opt, lr_at(step, cfg))
        assert opt.parts["adamw"].param_groups[0]["lr"] == pytest.approx(lr_at(step, cfg))
        assert opt.parts["muon"].param_groups[0]["lr"] == pytest.approx(lr_at(step, cfg) * 20)
    assert len(opt.param_groups) == len(opt.parts["muon"].param_groups) + len(opt.parts["adamw"].param_groups)


def test_state_dict_round_trip_and_a_mismatched_state_is_named():
    model = tiny()
    cfg = TrainConfig(optimizer="muon")
    opt = build_optimizer(model, cfg, CPU)
    model(torch.randint(0, 64, (2, 8)), torch.randint(0, 64, (2, 8)))[1].backward()
    opt.step()
    saved = opt.state_dict()
    fresh = build_optimizer(model, cfg, CPU)
    fresh.load_state_dict(saved)
    for name in ("muon", "adamw"):
        assert fresh.parts[name].state_dict()["state"].keys() == saved[name]["state"].keys()
    first = opt.parts["muon"].param_groups[0]["params"][0]
    assert torch.equal(
        fresh.parts["muon"].state[fresh.parts["muon"].param_groups[0]["params"][0]]["momentum_buffer"],
        opt.parts["muon"].state[first]["momentum_buffer"],
    )
    adamw_state = build_optimizer(model, TrainConfig(), CPU).state_dict()
    with pytest.raises(LmforgeError, match="AdamW/Adam's, not Muon"):
        fresh.load_state_dict(adamw_state)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"muon_lr": 0.0}, "muon_lr must be a finite number > 0"),
        ({"muon_lr": -0.02}, "muon_lr must be a finite number > 0"),
        ({"muon_lr": math.nan}, "muon_lr must be a finite number > 0"),
        ({"muon_lr": math.inf}, "muon_lr must be a finite number > 0"),
        ({"muon_momentum": 1.0}, r"muon_momentum must be in \[0, 1\)"),
        ({"muon_momentum": math.nan}, "muon_momentum"),
        ({"muon_weight_decay": -0.1}, "muon_weight_decay"),
        ({"lr": 0.0}, "needs train.lr > 0"),
        ({"lr": math.nan}, "train.lr must be a finite number"),
    ],
)
def test_muon_values_that_break_the_math_are_refused(override, message):
    cfg = from_dict(RunConfig, {"train": {"optimizer": "muon", **override}})
    with pytest.raises(ConfigError, match=message):
        cfg.train.validate()


def test_unknown_optimizer_is_refused_when_parsed():
    with pytest.raises(ConfigError, match="muon"):
        from_dict(RunConfig, {"train": {"optimizer": "sgd"}})


# ---- in the training loop


def test_muon_run_learns_and_sigkill_resume_reproduces_the_losses(data, tmp_path):
    shards, tok, _ = data
    cfg = make_cfg(
        tok,
        {"resid_dropout": 0.1},
        max_steps=40,
        ckpt_every=5,
        eval_every=10,
        keep_last=2,
        optimizer="muon",
        muon_weight_decay=0.05,
    )
    reference = train(cfg, shards, tok, tmp_path / "ref")
    losses = [r["loss"] for r in read_metrics(tmp_path / "ref")]
    assert sum(losses[-5:]) / 5 < losses[0] - 1.0  # it learns

    run = tmp_path / "killed"
    proc = start_training(data, run, cfg)
    wait_for(
        lambda: (run / "checkpoints" / "step_000010" / "COMPLETE").exists(), proc, "the step-10 checkpoint"
    )
    proc.kill()
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert int(latest_checkpoint(run).name.split("_")[1]) < 40, "the run finished before it was killed"

    resumed = train(cfg, shards, tok, run)
    assert [r["step"] for r in read_metrics(run)] == list(range(1, 41))
    assert [r["loss"] for r in read_metrics(run)] == losses  # identical floats
    assert [v["val_loss"] for v in read_metrics(run, "val")] == [
        v["val_loss"] for v in read_metrics(tmp_path / "ref", "val")
    ]
    assert resumed.steps == reference.steps
    a, _ = load_model(tmp_path / "ref")
    b, _ = load_model(run)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_train_help_lists_every_optimizer_and_decay():
    import typing

    from lmforge.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    text = sub.choices["train"].format_help()
    hints = typing.get_type_hints(TrainConfig)
    for field in ("optimizer", "decay", "decay_shape", "muon_adjust_lr"):
        assert "|".join(typing.get_args(hints[field])) in text, field


@pytest.mark.parametrize("before, after", [("muon", "adamw"), ("adamw", "muon")])
def test_resuming_with_the_other_kind_of_optimizer_is_one_clear_error(data, tmp_path, before, after):
    shards, tok, _ = data
    run = tmp_path / "run"
    train(make_cfg(tok, max_steps=2, optimizer=before), shards, tok, run)
    saved = sorted((p.name, p.stat().st_mtime_ns) for p in latest_checkpoint(run).iterdir())
    with pytest.raises(
        LmforgeError,
        match=f"optimizer state of train.optimizer={before} .this run: {after}.; "
        f"resume with train.optimizer={before}, or .* train.init_from",
    ):
        train(make_cfg(tok, max_steps=4, optimizer=after), shards, tok, run)
    assert (
        sorted((p.name, p.stat().st_mtime_ns) for p in latest_checkpoint(run).iterdir()) == saved
    )  # untouched
    train(
        make_cfg(tok, max_steps=4, optimizer=after, init_from=str(run)), shards, tok, tmp_path / "new"
    )  # the way out


def test_grad_scaler_unscales_and_skips_both_parts():
    """fp16 runs (CUDA) step through torch's GradScaler, which only needs param_groups and step;
    its CPU form checks the same calls here."""
    cfg = TrainConfig(optimizer="muon", lr=1e-2)
    models = [tiny(), tiny()]
    plain, scaled = (build_optimizer(m, cfg, CPU) for m in models)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    x, y = torch.randint(0, 64, (2, 8)), torch.randint(0, 64, (2, 8))
    models[0](x, y)[1].backward()
    plain.step()
    scaler.scale(models[1](x, y)[1]).backward()
    scaler.step(scaled)
    scaler.update()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    before = [p.detach().clone() for p in models[1].parameters()]
    scaled.zero_grad()
    scaler.scale(models[1](x, y)[1]).backward()
    models[1].blocks[0].attn.q_proj.weight.grad[0, 0] = math.inf  # an overflow: neither part steps
    scaler.step(scaled)
    scaler.update()
    assert all(torch.equal(a, b) for a, b in zip(before, models[1].parameters()))
    assert scaler.get_scale() == 2.0**9


def test_a_lookup_table_inside_a_block_stays_with_adamw():
    model = tiny()
    model.blocks[0].value_table = torch.nn.Embedding(64, 16)  # e.g. a value-embedding trick
    opt = build_optimizer(model, TrainConfig(optimizer="muon"), CPU)
    assert all(
        p is not model.blocks[0].value_table.weight
        for g in opt.parts["muon"].param_groups
        for p in g["params"]
    )
    assert any(
        p is model.blocks[0].value_table.weight for g in opt.parts["adamw"].param_groups for p in g["params"]
    )
