"""Learning-rate schedules as pure functions of the step (property tests), warmup-stable-decay
in particular, and the batch-size ramp still driving the loop beside them."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_train_loop import data, make_cfg, read_metrics

from lmforge.config import RunConfig, from_dict
from lmforge.errors import ConfigError
from lmforge.train.config import TrainConfig
from lmforge.train.loop import train
from lmforge.train.schedule import lr_at, micro_batches_at, wsd_decay_start

__all__ = ["data"]  # the shared fixture


ANY_DECAY = st.sampled_from(["cosine", "linear", "constant", "wsd"])


@st.composite
def configs(draw, decay=ANY_DECAY):
    max_steps = draw(st.integers(1, 400))
    return TrainConfig(
        lr=draw(st.floats(1e-5, 1.0)),
        max_steps=max_steps,
        warmup_steps=draw(st.integers(0, max_steps)),
        decay=draw(decay),
        min_lr_ratio=draw(st.sampled_from([0.0, 0.1, 0.5, 1.0])),
        decay_fraction=draw(st.floats(0.01, 1.0)),
        decay_shape=draw(st.sampled_from(["linear", "1-sqrt"])),
    )


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)


@settings(max_examples=300, deadline=None)
@given(configs())
def test_every_schedule_warms_up_then_never_rises_and_stays_in_range(cfg):
    lrs = [lr_at(s, cfg) for s in range(cfg.max_steps + 3)]
    floor = cfg.lr * cfg.min_lr_ratio
    w = cfg.warmup_steps
    assert all(0 < x <= cfg.lr * (1 + 1e-12) for x in lrs[:w])
    assert all(floor * (1 - 1e-12) <= x <= cfg.lr * (1 + 1e-12) for x in lrs[w:])
    assert all(a < b for a, b in pairwise(lrs[:w]))  # warmup rises
    if w:
        assert close(lrs[w - 1], cfg.lr)  # ... to the peak at its last step
    assert all(b <= a * (1 + 1e-12) for a, b in pairwise(lrs[max(w - 1, 0) :]))  # then never rises
    if cfg.decay != "constant" and cfg.max_steps > w:
        assert close(lr_at(cfg.max_steps, cfg), floor)  # the floor is reached at max_steps
        assert close(lr_at(cfg.max_steps + 100, cfg), floor)  # ... and kept


@settings(max_examples=300, deadline=None)
@given(configs(decay=st.just("wsd")))
def test_wsd_holds_the_peak_until_the_last_decay_fraction(cfg):
    start = wsd_decay_start(cfg)
    assert cfg.warmup_steps <= start <= cfg.max_steps
    decay_steps = cfg.max_steps - start
    assert (
        abs(decay_steps - cfg.decay_fraction * cfg.max_steps) <= 0.5
        or decay_steps == 1
        or start == cfg.warmup_steps
    )
    assert all(close(lr_at(s, cfg), cfg.lr) for s in range(cfg.warmup_steps, start + 1))  # the stable phase
    if start + 1 < cfg.max_steps and cfg.min_lr_ratio < 1.0:
        assert lr_at(start + 1, cfg) < cfg.lr  # decay begins right after it


@settings(max_examples=200, deadline=None)
@given(configs(decay=st.just("wsd")))
def test_wsd_cooldown_shapes(cfg):
    lin = TrainConfig(**{**cfg.__dict__, "decay_shape": "linear"})
    sqrt = TrainConfig(**{**cfg.__dict__, "decay_shape": "1-sqrt"})
    start, span = wsd_decay_start(cfg), max(cfg.max_steps - wsd_decay_start(cfg), 1)
    floor = cfg.lr * cfg.min_lr_ratio
    for step in range(start, cfg.max_steps + 1):
        p = (step - start) / span
        assert close(lr_at(step, lin), cfg.lr - (cfg.lr - floor) * p)  # a straight line to the floor
        assert close(lr_at(step, sqrt), floor + (cfg.lr - floor) * (1 - math.sqrt(p)))
        assert lr_at(step, sqrt) <= lr_at(step, lin) * (1 + 1e-12)  # 1-sqrt drops faster at first


def test_wsd_worked_example():
    cfg = TrainConfig(
        lr=1.0,
        warmup_steps=2,
        max_steps=10,
        decay="wsd",
        decay_fraction=0.3,
        min_lr_ratio=0.0,
        decay_shape="linear",
    )
    assert [lr_at(s, cfg) for s in range(11)] == pytest.approx(
        [0.5, 1, 1, 1, 1, 1, 1, 1, 2 / 3, 1 / 3, 0]
    )  # 3 decay steps: 7 (peak), 8, 9; 0 at step 10
    # a decay longer than what follows the warmup starts right after it
    early = TrainConfig(
        lr=1.0,
        warmup_steps=8,
        max_steps=10,
        decay="wsd",
        decay_fraction=0.5,
        decay_shape="linear",
        min_lr_ratio=0.0,
    )
    assert wsd_decay_start(early) == 8 and lr_at(9, early) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"decay_fraction": 0.0}, r"decay_fraction must be in \(0, 1\]"),
        ({"decay_fraction": 1.5}, r"decay_fraction must be in \(0, 1\]"),
        ({"decay_fraction": math.nan}, "decay_fraction"),
    ],
)
def test_bad_decay_fraction_is_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(RunConfig, {"train": {"decay": "wsd", **override}}).train.validate()
    with pytest.raises(ConfigError, match="1-sqrt"):
        from_dict(RunConfig, {"train": {"decay_shape": "cosine"}})


def test_wsd_with_the_batch_ramp_in_the_loop(data, tmp_path):
    shards, tok, _ = data
    cfg = make_cfg(
        tok,
        max_steps=12,
        batch_size=2,
        grad_accum=4,
        batch_ramp_start=64,
        batch_ramp_tokens=1024,
        decay="wsd",
        decay_fraction=0.25,
        min_lr_ratio=0.0,
        warmup_steps=2,
        seq_len=32,
    )
    train(cfg, shards, tok, tmp_path / "run")
    rows = read_metrics(tmp_path / "run")
    assert [r["lr"] for r in rows] == pytest.approx([lr_at(s, cfg.train) for s in range(12)])
    assert [r["lr"] for r in rows][2:9] == pytest.approx([cfg.train.lr] * 7)  # the stable phase
    per_step = [b["tokens"] - a["tokens"] for a, b in pairwise([{"tokens": 0}, *rows])]
    want = [micro_batches_at(t, cfg.train, 32) * 2 * 32 for t in [0, *[r["tokens"] for r in rows[:-1]]]]
    assert per_step == want and per_step[0] < per_step[-1] == 4 * 2 * 32  # the batch still ramps
