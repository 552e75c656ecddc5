"""Model shape validation: every size field and every option, one clear ConfigError (CLI: one line,
exit 2), never an arithmetic error from a later step (issue 13 item 12)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import typing

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.errors import ConfigError
from lmforge.model import ModelConfig, Transformer
from lmforge.model.config import ACTIVATIONS
from lmforge.model.transformer import MLP, GatedMLP, activation_function
from lmforge.plan.memory import activation_elements

HINTS = typing.get_type_hints(ModelConfig)
SIZE_FIELDS = [f.name for f in dataclasses.fields(ModelConfig) if HINTS[f.name] in (int, int | None)]


def test_size_fields_are_the_expected_ones():
    # A new size field joins the enumeration below by itself; this pins what it enumerates today.
    assert set(SIZE_FIELDS) >= {
        "vocab_size",
        "block_size",
        "n_layer",
        "n_encoder_layer",
        "n_head",
        "n_kv_head",
        "n_embd",
        "ffn_hidden",
        "ffn_multiple_of",
    }


def test_choices_come_from_the_annotations():
    choices = ModelConfig.choices()
    assert choices["activation"] == ("relu", "gelu", "silu", "relu2", "swiglu", "geglu")
    assert set(choices) == {"kind", "activation", "norm", "norm_position", "pos"}
    for name, allowed in choices.items():
        for value in allowed:  # every listed value validates
            ModelConfig(**{name: value}, n_embd=32, n_head=4).validate()
        with pytest.raises(ConfigError, match=f"model.{name}='nope' is not one of {', '.join(allowed)}"):
            ModelConfig(**{name: "nope"}).validate()


def lmforge(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lmforge", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        timeout=300,
        check=False,
    )


CLI_CASES = [
    (f"model.{name}=0", f"model.{name} must be a positive integer, got 0") for name in SIZE_FIELDS
] + [
    ("model.n_head=-2", "model.n_head must be a positive integer, got -2"),
    ("model.n_head=5", "model.n_head=5 does not divide model.n_embd=192"),
    ("model.n_kv_head=3", "model.n_kv_head=3 must divide model.n_head=4"),
    ("model.n_kv_head=8", "model.n_kv_head=8 must divide model.n_head=4"),
    ("model.logit_softcap=0", "model.logit_softcap must be a positive finite number or null, got 0.0"),
    ("model.logit_softcap=.nan", "model.logit_softcap must be a positive finite number or null, got nan"),
    ("model.qk_norm=maybe", "'model.qk_norm' must be true or false, got 'maybe'"),
]


@pytest.mark.parametrize("override, message", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_every_bad_size_is_one_line_and_exit_2(override, message, tmp_path):
    proc = lmforge("train", override, "out_dir=runs", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"lmforge: error: {message}"]
    assert not (tmp_path / "runs").exists()


SIZES = {name: st.integers(-2, 9) for name in SIZE_FIELDS}
SIZES.update(
    n_encoder_layer=st.none() | st.integers(-1, 3),
    n_kv_head=st.none() | st.integers(-1, 5),
    ffn_hidden=st.none() | st.integers(-1, 12),
    n_layer=st.integers(-1, 3),
    n_embd=st.integers(-2, 24),
)


# Switches and numbers beyond the Literal choices; a soft-cap that passes the type but breaks the
# math (0, negative, NaN, infinite) must be a ConfigError, never NaN logits.
SWITCHES = {
    "qk_norm": st.booleans(),
    "logit_softcap": st.none() | st.floats(allow_nan=True, allow_infinity=True),
    "bias": st.booleans(),
    "tie_embeddings": st.booleans(),
}


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.fixed_dictionaries(SIZES),
    options=st.fixed_dictionaries(
        {name: st.sampled_from(allowed) for name, allowed in ModelConfig.choices().items()}
    ),
    switches=st.fixed_dictionaries(SWITCHES),
)
def test_any_sizes_either_raise_config_error_or_build_and_run(sizes, options, switches):
    cfg = ModelConfig(**sizes, **options, **switches)
    try:
        cfg.validate()
    except ConfigError:
        return
    model = Transformer(cfg)
    ids = torch.zeros(1, min(cfg.block_size, 3), dtype=torch.long)
    extra = {"decoder_input_ids": ids} if cfg.kind == "encoder-decoder" else {}
    logits, _ = model(ids, **extra)
    assert logits.shape == (1, ids.shape[1], cfg.vocab_size)
    assert torch.isfinite(logits).all()
    if cfg.logit_softcap is not None:
        assert logits.abs().max() <= cfg.logit_softcap


@pytest.mark.parametrize("cap", [0.0, -1.0, float("nan"), float("inf"), float("-inf"), True, "30"])
def test_softcap_values_that_break_the_math_are_refused(cap):
    with pytest.raises(ConfigError, match="model.logit_softcap must be a positive finite number or null"):
        ModelConfig(logit_softcap=cap).validate()


def test_qk_norm_must_be_a_bool():
    with pytest.raises(ConfigError, match="model.qk_norm must be true or false, got 1"):
        ModelConfig(qk_norm=1).validate()


def test_every_activation_choice_has_one_description_used_by_model_and_planner():
    assert set(ACTIVATIONS) == set(ModelConfig.choices()["activation"])
    for name, act in ACTIVATIONS.items():
        cfg = ModelConfig(
            activation=name, n_embd=32, n_head=4, vocab_size=64, block_size=16, n_layer=1, ffn_hidden=64
        )
        mlp = Transformer(cfg).blocks[0].mlp
        assert isinstance(mlp, GatedMLP if act.gated else MLP)
        assert mlp.act is activation_function(act.function)
        relu = dataclasses.replace(cfg, activation="relu")
        # Same hidden width (ffn_hidden fixed): the planner's layer estimate differs by the saved values.
        extra = activation_elements(cfg, 16)["layer"] - activation_elements(relu, 16)["layer"]
        assert extra == (act.saved_per_hidden - 1) * cfg.hidden_dim
