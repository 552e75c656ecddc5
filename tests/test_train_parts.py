"""The training loop's parts on their own: schedule, batch ramp, optimizer groups, precision, objectives."""

from __future__ import annotations

import json
import math
from itertools import islice, pairwise

import pytest
import torch

from lmforge.data.documents import embedded_corpus
from lmforge.errors import ConfigError
from lmforge.model import ModelConfig, Transformer
from lmforge.tokenizer import TokenizerConfig, train_tokenizer
from lmforge.train.config import TrainConfig
from lmforge.train.metrics import MetricsLog
from lmforge.train.objectives import IGNORE, Objective, batch_seed, span_noise_mask
from lmforge.train.optim import build_optimizer, param_groups
from lmforge.train.precision import autocast, grad_scaler, resolve_device, resolve_dtype
from lmforge.train.schedule import lr_at, micro_batches_at


@pytest.fixture(scope="module")
def tok():
    texts = [d["text"] for d in islice(embedded_corpus(), 40)]
    return train_tokenizer(texts, TokenizerConfig(vocab_size=300))


# ---- schedule


def test_warmup_then_cosine_to_min_ratio():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, max_steps=110, min_lr_ratio=0.1, decay="cosine")
    assert lr_at(0, cfg) == pytest.approx(1e-4)  # (0 + 1) / 10 of the peak: no step at lr 0
    assert lr_at(4, cfg) == pytest.approx(5e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)  # warmup ends at the peak
    assert lr_at(10, cfg) == pytest.approx(1e-3)
    assert lr_at(60, cfg) == pytest.approx(1e-4 + 0.5 * 9e-4)  # half way: mid-point of the cosine
    assert lr_at(110, cfg) == pytest.approx(1e-4)  # ends at 10% of the peak
    assert lr_at(500, cfg) == pytest.approx(1e-4)  # and stays there
    lrs = [lr_at(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in pairwise(lrs))  # monotone decay


def test_linear_and_constant_decay():
    lin = TrainConfig(lr=1.0, warmup_steps=0, max_steps=100, min_lr_ratio=0.2, decay="linear")
    assert [lr_at(s, lin) for s in (0, 50, 100)] == pytest.approx([1.0, 0.6, 0.2])
    const = TrainConfig(lr=2.0, warmup_steps=4, max_steps=100, decay="constant")
    assert [lr_at(s, const) for s in (0, 3, 4, 99)] == pytest.approx([0.5, 2.0, 2.0, 2.0])


def test_batch_ramp_grows_micro_batches_linearly():
    # 4 x 64 = 256 tokens per micro-batch; full step = 8 micro-batches = 2048 tokens.
    cfg = TrainConfig(batch_size=4, grad_accum=8, batch_ramp_start=256, batch_ramp_tokens=10_000)
    counts = [micro_batches_at(t, cfg, seq_len=64) for t in (0, 2_500, 5_000, 7_500, 9_999, 10_000, 10**6)]
    assert counts == [1, 3, 5, 6, 8, 8, 8]  # start + (full - start) * seen / ramp, in micro-batches
    assert micro_batches_at(0, TrainConfig(grad_accum=8), 64) == 8  # ramp off
    tiny_start = TrainConfig(batch_size=4, grad_accum=8, batch_ramp_start=1, batch_ramp_tokens=100)
    assert micro_batches_at(0, tiny_start, 64) == 1  # never below one micro-batch


# ---- optimizer


def test_weight_decay_only_on_matrices():
    model = Transformer(ModelConfig(vocab_size=300, n_layer=2, n_embd=32, n_head=2, block_size=32, bias=True))
    groups = param_groups(model, 0.1)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert decayed and all(names[i].endswith("weight") for i in decayed)
    for name, p in model.named_parameters():
        if "norm" in name or name.endswith("bias"):
            assert id(p) not in decayed, name
        if name.endswith(("q_proj.weight", "up_proj.weight", "down_proj.weight")):
            assert id(p) in decayed, name
    every = [p for g in groups for p in g["params"]]
    assert len(every) == len({id(p) for p in every}) == len(list(model.parameters()))  # tied weight once
    opt = build_optimizer(model, TrainConfig(weight_decay=0.1), torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.95)
    assert isinstance(
        build_optimizer(model, TrainConfig(optimizer="adam"), torch.device("cpu")), torch.optim.Adam
    )


def test_param_groups_fallback_for_plain_modules():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    groups = param_groups(net, 0.5)
    assert [len(g["params"]) for g in groups] == [1, 3]
    assert [g["weight_decay"] for g in groups] == [0.5, 0.0]


# ---- precision


def test_precision_choices_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        resolve_dtype("fp16", cpu)
    assert resolve_device("cpu") == cpu
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
        if not torch.backends.mps.is_available():
            assert resolve_device("auto") == cpu
    with pytest.raises(ConfigError, match="not a device"):
        resolve_device("tpu9")
    assert not grad_scaler(cpu, torch.float32).is_enabled()
    with autocast(cpu, torch.bfloat16):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_train_config_validation():
    with pytest.raises(ConfigError, match="train.max_steps"):
        TrainConfig(max_steps=0).validate()
    with pytest.raises(ConfigError, match="train.min_lr_ratio"):
        TrainConfig(min_lr_ratio=1.5).validate()
    TrainConfig().validate()


# ---- objectives


def _window(tok, B=4, T=64):
    ids = tok.encode(" ".join(d["text"] for d in islice(embedded_corpus(), 5)))
    x = torch.tensor(ids[: B * (T + 1)]).view(B, T + 1)
    x[:, 10] = tok.eot_id  # a document boundary inside each row
    return x[:, :-1].contiguous(), x[:, 1:].contiguous()


def test_decoder_objective_is_next_token(tok):
    x, y = _window(tok)
    batch = Objective("decoder", TrainConfig(), tok)(x, y, seed=0)
    assert batch["input_ids"] is x and batch["targets"] is y


def test_mlm_masks_15_percent_with_80_10_10(tok):
    x, y = _window(tok, B=64, T=64)
    obj = Objective("encoder", TrainConfig(mlm_probability=0.15), tok)
    batch = obj(x, y, seed=batch_seed(1, 2, 3))
    inp, tgt = batch["input_ids"], batch["targets"]
    assert inp.shape == tgt.shape == x.shape
    chosen = tgt != IGNORE
    assert torch.equal(tgt[chosen], x[chosen])  # targets are the original tokens at chosen positions
    assert torch.equal(inp[~chosen], x[~chosen])  # everything else untouched
    assert not chosen[x == tok.eot_id].any()  # special tokens are never chosen
    per_row = chosen.sum(1)
    candidates = (x != tok.eot_id).sum(1)
    assert torch.equal(per_row, (candidates * 0.15).round().long())
    masked = (inp[chosen] == tok.mask_id).float().mean().item()
    kept = (inp[chosen] == x[chosen]).float().mean().item()
    assert 0.75 < masked < 0.85 and 0.06 < kept < 0.16  # 80% mask, 10% random (+ collisions), 10% kept
    assert (inp[chosen & (inp != tok.mask_id)] >= 7).all()  # random replacements are ordinary tokens
    again = obj(x, y, seed=batch_seed(1, 2, 3))
    assert torch.equal(again["input_ids"], inp)  # same seed, same masks


def test_span_noise_mask_density_and_span_length():
    gen = torch.Generator().manual_seed(0)
    noise = span_noise_mask(torch.Size([16, 100]), 0.15, 3.0, gen)
    assert noise.shape == (16, 100) and (noise.sum(1) == 15).all()
    starts = noise & ~torch.nn.functional.pad(noise, (1, 0))[:, :-1]
    assert (starts.sum(1) == 5).all()  # 15 noise tokens / mean span 3 = 5 spans in every row
    assert not noise[:, 0].any()  # rows start with kept text (T5)


def test_t5_span_corruption_batch(tok):
    x, y = _window(tok, B=4, T=64)
    batch = Objective("encoder-decoder", TrainConfig(noise_density=0.15, mean_span_length=3.0), tok)(
        x, y, seed=7
    )
    src, dec, tgt = batch["input_ids"], batch["decoder_input_ids"], batch["targets"]
    n_noise, n_spans = 10, 3  # round(64 * 0.15), round(10 / 3)
    assert src.shape == (4, 64 - n_noise + n_spans)
    assert tgt.shape == dec.shape == (4, n_noise + n_spans + 1)
    assert (src == tok.mask_id).sum(1).tolist() == [n_spans] * 4
    assert (tgt == tok.mask_id).sum(1).tolist() == [n_spans] * 4
    assert (tgt[:, -1] == tok.eot_id).all() and (dec[:, 0] == tok.eot_id).all()
    assert torch.equal(dec[:, 1:], tgt[:, :-1])  # teacher forcing: target shifted right
    for row in range(4):  # splicing the spans back into the source gives the original window
        spans, cur = [], None
        for t in tgt[row, :-1].tolist():
            if t == tok.mask_id:
                cur = []
                spans.append(cur)
            else:
                cur.append(t)
        rebuilt = []
        for t in src[row].tolist():
            rebuilt.extend(spans.pop(0) if t == tok.mask_id else [t])
        assert rebuilt == x[row].tolist()


def test_bart_infilling_batch(tok):
    x, y = _window(tok, B=4, T=64)
    cfg = TrainConfig(noise_density=0.3, mean_span_length=3.0, denoising="bart")
    batch = Objective("encoder-decoder", cfg, tok)(x, y, seed=7)
    src, dec, tgt = batch["input_ids"], batch["decoder_input_ids"], batch["targets"]
    assert torch.equal(tgt, x)  # the target is the original text
    assert dec[:, 0].eq(tok.eot_id).all() and torch.equal(dec[:, 1:], x[:, :-1])
    assert src.shape == (4, 64 - 19 + 6)  # 19 noise tokens in 6 spans, one mask each
    assert (src == tok.mask_id).sum(1).tolist() == [6] * 4


def test_objective_losses_backpropagate(tok):
    """Each kind's batch fits the real model's forward and gives a finite loss with gradients."""
    for kind in ("encoder", "encoder-decoder"):
        model = Transformer(
            ModelConfig(kind=kind, vocab_size=tok.vocab_size, n_layer=1, n_embd=32, n_head=2, block_size=64)
        )
        x, y = _window(tok, B=2, T=64)
        batch = Objective(kind, TrainConfig(), tok)(x, y, seed=1)
        _, loss = model(
            batch["input_ids"], batch["targets"], decoder_input_ids=batch.get("decoder_input_ids")
        )
        loss.backward()
        assert math.isfinite(loss.item()) and model.tok_emb.weight.grad is not None


# ---- metrics


def test_metrics_truncate_drops_later_steps_and_torn_lines(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=False)
    for step in (1, 2, 3):
        log.write({"kind": "train", "step": step, "loss": float(step)})
    log.write({"kind": "val", "step": 2, "val_loss": float("nan")})
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "st')  # a line cut by SIGKILL
    log.truncate_after(2)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["kind"], r["step"]) for r in lines] == [("train", 1), ("train", 2), ("val", 2)]
    assert lines[2]["val_loss"] is None  # NaN is not JSON: written as null


def test_tensorboard_scalars_and_resume_purge(tmp_path):
    """The scalars reach TensorBoard's event files; a resume from step 2 hides the old steps 3-4,
    so the re-run's curve replaces them instead of doubling back."""
    pytest.importorskip("tensorboard")
    log = MetricsLog(tmp_path)
    for step in (1, 2, 3, 4):
        log.write({"kind": "train", "step": step, "loss": 10.0 - step, "tokens": 100 * step})
    log.write({"kind": "val", "step": 4, "val_loss": 5.5})
    log.close()
    scalars = lambda tag: [(e.step, e.value) for e in _events(tmp_path).Scalars(tag)]
    assert scalars("train/loss") == [(1, 9.0), (2, 8.0), (3, 7.0), (4, 6.0)]
    log = MetricsLog(tmp_path)  # resumed from step 2, then killed before it logged anything
    log.truncate_after(2)
    log.close()
    assert scalars("train/loss") == [(1, 9.0), (2, 8.0)] and scalars("val/val_loss") == []
    log = MetricsLog(tmp_path)
    log.truncate_after(2)
    for step in (3, 4):
        log.write({"kind": "train", "step": step, "loss": 20.0 + step})
    log.close()
    assert scalars("train/loss") == [(1, 9.0), (2, 8.0), (3, 23.0), (4, 24.0)]


def _events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    return acc
