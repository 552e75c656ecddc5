"""Every model option trains: a tiny model memorises a tiny batch, and each shape learns its task."""

import dataclasses

import pytest
import torch

from lmforge.model import ModelConfig, Transformer
from lmforge.train.objectives import mlm_batch


def tiny(**overrides) -> ModelConfig:
    base = {"vocab_size": 32, "block_size": 16, "n_layer": 2, "n_head": 4, "n_embd": 32}
    base.update(overrides)
    return ModelConfig(**base)


def train(model: Transformer, batch: dict, steps: int = 60, lr: float = 1e-2) -> tuple[float, float]:
    """Adam on one fixed batch; returns (first loss, final loss measured in eval mode)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    first = None
    for _ in range(steps):
        _, loss = model(**batch)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        _, loss = model(**batch)
    return first, loss.item()


# Every value of every option field (read from ModelConfig's Literal annotations, so a new choice is
# tested here without editing this file); the model kinds have their own tests below.
DEFAULT = ModelConfig()
SINGLE = [
    {name: value}
    for name, allowed in ModelConfig.choices().items()
    if name != "kind"
    for value in allowed
    if value != getattr(DEFAULT, name)
]
OPTIONS = [
    {},  # GPT-2 style: learned positions, GELU, pre-LayerNorm, biases, tied
    *SINGLE,
    {"norm_position": "post", "norm": "rmsnorm"},
    {"n_kv_head": 2},  # GQA
    {"n_kv_head": 1},  # MQA
    {"bias": False},
    {"tie_embeddings": False},
    {"scaled_residual_init": False},
    {"embd_dropout": 0.1, "attn_dropout": 0.1, "resid_dropout": 0.1},
    {"pos": "rope", "activation": "swiglu", "norm": "rmsnorm", "n_kv_head": 2, "bias": False},  # Llama style
    {"qk_norm": True},
    {"qk_norm": True, "pos": "rope", "norm": "rmsnorm", "bias": False},  # Qwen3 style
    {"logit_softcap": 3.0},  # below the 3.47 starting loss's logit scale: the cap binds while it learns
    {
        "pos": "rope",
        "norm": "rmsnorm",
        "activation": "relu2",
        "qk_norm": True,
        "logit_softcap": 15.0,
        "tie_embeddings": False,
        "bias": False,
    },  # modded-nanoGPT / nanochat style
]
# Every on/off switch of the model (bool fields) and every optional number that changes the math.
SWITCHES = [f.name for f in dataclasses.fields(ModelConfig) if f.type in ("bool", bool)]
OPTIONAL_MATH = ["logit_softcap", "n_kv_head"]


def test_options_cover_every_choice():
    covered = {(k, v) for o in OPTIONS for k, v in o.items()}
    for name, allowed in ModelConfig.choices().items():
        if name != "kind":
            assert {(name, v) for v in allowed} - {(name, getattr(DEFAULT, name))} <= covered
    assert set(SWITCHES) >= {"qk_norm", "bias", "tie_embeddings", "scaled_residual_init"}
    for name in SWITCHES:
        assert (name, not getattr(DEFAULT, name)) in covered, name
    for name in OPTIONAL_MATH:
        assert any(k == name and v is not None for k, v in covered), name


@pytest.mark.parametrize(
    "overrides", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "gpt2"
)
def test_each_option_overfits_a_tiny_batch(overrides):
    torch.manual_seed(0)
    model = Transformer(tiny(**overrides))
    x = torch.randint(0, 32, (4, 17))
    first, last = train(model, {"input_ids": x[:, :-1], "targets": x[:, 1:]})
    assert first > 3.0  # about ln(32) = 3.47 at init
    assert last < 0.1 * first, (first, last)


def test_dropout_is_active_in_training_only():
    torch.manual_seed(0)
    model = Transformer(tiny(embd_dropout=0.2, attn_dropout=0.2, resid_dropout=0.2))
    x = torch.randint(0, 32, (2, 8))
    model.train()
    assert not torch.equal(model(x)[0], model(x)[0])
    model.eval()
    assert torch.equal(model(x)[0], model(x)[0])


def test_encoder_learns_masked_lm():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = Transformer(tiny(kind="encoder", pos="rope"))
    x = torch.randint(3, 32, (8, 16))
    is_special = torch.zeros(32, dtype=torch.bool)
    is_special[:3] = True
    batch = mlm_batch(x, 0.25, mask_id=2, is_special=is_special, normal_ids=torch.arange(3, 32), gen=gen)
    assert (batch["targets"] != -100).sum() > 16
    first, last = train(model, batch, steps=120, lr=5e-3)
    assert last < 0.1 * first, (first, last)


def test_encoder_decoder_learns_to_reverse():
    """Seq2seq on the classic toy task: the target is the source reversed, fed shifted right
    behind a start token, so the decoder needs cross-attention to know what comes next."""
    torch.manual_seed(0)
    model = Transformer(tiny(kind="encoder-decoder", n_encoder_layer=2, pos="learned"))
    source = torch.randint(3, 32, (8, 10))
    target = source.flip(1)
    start = torch.zeros(8, 1, dtype=torch.long)
    batch = {
        "input_ids": source,
        "decoder_input_ids": torch.cat([start, target[:, :-1]], 1),
        "targets": target,
    }
    first, last = train(model, batch, steps=120, lr=5e-3)
    assert last < 0.1 * first, (first, last)
    # Greedy decoding through the KV cache reproduces the reversal for a training example.
    cache = model.new_kv_cache(1, 10)
    token, out = start[:1], []
    with torch.no_grad():
        for _ in range(10):
            logits, _ = model(source[:1], decoder_input_ids=token, kv_cache=cache)
            token = logits[:, -1:].argmax(-1)
            out.append(token.item())
    assert out == target[0].tolist()
