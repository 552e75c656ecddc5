"""Config layer: recipes parse, overrides apply with types, mistakes name the key."""

import dataclasses

import pytest

from lmforge.config import RunConfig, from_dict, load_config, parse_overrides, recipe_names, to_dict, to_yaml
from lmforge.errors import ConfigError


def test_every_shipped_recipe_parses_and_validates():
    names = recipe_names()
    assert {"tiny", "gpt2-124m", "llama-1b"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert isinstance(cfg, RunConfig)
        assert cfg.name == name


def test_gpt2_recipe_has_gpt2_small_shape():
    m = load_config("gpt2-124m").model
    assert (m.n_layer, m.n_embd, m.n_head, m.block_size) == (12, 768, 12, 1024)
    assert (m.pos, m.activation, m.norm, m.bias, m.tie_embeddings) == (
        "learned",
        "gelu",
        "layernorm",
        True,
        True,
    )


def test_llama_recipe_is_about_one_billion_parameters():
    m = load_config("llama-1b").model
    assert m.pos == "rope" and m.activation == "swiglu" and m.norm == "rmsnorm" and m.n_kv_head == 8
    assert 1.0e9 < m.num_params() < 1.6e9


def test_overrides_are_typed_and_win_over_recipe():
    cfg = load_config(
        "tiny",
        [
            "train.lr=1e-4",
            "train.max_steps=7",
            "model.pos=alibi",
            "train.betas=[0.8,0.9]",
            "train.compile=true",
            "model.n_kv_head=null",
        ],
    )
    assert cfg.train.lr == 1e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.max_steps == 7
    assert cfg.model.pos == "alibi"
    assert cfg.train.betas == (0.8, 0.9)
    assert cfg.train.compile is True
    assert cfg.model.n_kv_head is None


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.lrr=1", "unknown config key 'train.lrr' (did you mean 'train.lr'?)"),
        ("trian.lr=1", "unknown config key 'trian' (did you mean 'train'?)"),
        ("train.max_steps=abc", "'train.max_steps' must be an integer"),
        ("train.compile=maybe", "'train.compile' must be true or false"),
        (
            "model.pos=rop",
            "'model.pos' must be one of learned, sinusoidal, rope, alibi, got 'rop' (did you mean 'rope'?)",
        ),
        ("train.betas=[0.9]", "'train.betas' must have 2 items"),
        ("model.n_head=5", "model.n_head=5 does not divide model.n_embd=192"),
        ("model.n_kv_head=3", "model.n_kv_head=3 must divide model.n_head=4"),
        ("train", "must look like section.key=value"),
        ("train.seq_len=512", "train.seq_len=512 is longer than model.block_size=128"),
        ("train.batch_size=0", "train.batch_size must be positive"),
        ("data.val_fraction=1.5", "data.val_fraction must be between 0 and 1"),
    ],
)
def test_bad_overrides_give_one_clear_message(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config("tiny", [override])
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_recipe_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown recipe 'tinyy' \\(did you mean 'tiny'\\?\\)"):
        load_config("tinyy")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(str(bad))


def test_yaml_path_recipe_and_round_trip(tmp_path):
    cfg = load_config("tiny", ["model.n_layer=3", "sample.stop=['\\n\\n']"])
    path = tmp_path / "r.yaml"
    path.write_text(to_yaml(cfg))
    again = load_config(str(path))
    assert to_dict(again) == to_dict(cfg)
    assert again.model.n_layer == 3


def test_from_dict_rejects_non_mapping_section():
    with pytest.raises(ConfigError, match="'model' must be a mapping"):
        from_dict(RunConfig, {"model": 3})


def test_parse_overrides_nests():
    assert parse_overrides(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}


def test_every_config_field_has_a_default():
    for f in dataclasses.fields(RunConfig):
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
