"""Every model option trains: a tiny model memorises a tiny batch, and each shape learns its task."""

import pytest
import torch

from lmforge.model import ModelConfig, Transformer
from lmforge.model.objectives import mask_tokens, prefix_to_continuation


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
SINGLE = [{name: value} for name, allowed in ModelConfig.choices().items() if name != "kind"
          for value in allowed if value != getattr(DEFAULT, name)]
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
]


def test_options_cover_every_choice():
    covered = {(k, v) for o in OPTIONS for k, v in o.items()}
    for name, allowed in ModelConfig.choices().items():
        if name != "kind":
            assert {(name, v) for v in allowed} - {(name, getattr(DEFAULT, name))} <= covered


@pytest.mark.parametrize("overrides", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "gpt2")
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
    inputs, targets = mask_tokens(x, mask_id=2, vocab_size=32, prob=0.25, generator=gen)
    assert (targets != -100).sum() > 16
    first, last = train(model, {"input_ids": inputs, "targets": targets}, steps=120, lr=5e-3)
    assert last < 0.1 * first, (first, last)


def test_encoder_decoder_learns_to_reverse():
    """Seq2seq on the classic toy task: the target is the source reversed, fed shifted right
    behind a start token, so the decoder needs cross-attention to know what comes next."""
    torch.manual_seed(0)
    model = Transformer(tiny(kind="encoder-decoder", n_encoder_layer=2, pos="learned"))
    source = torch.randint(3, 32, (8, 10))
    target = source.flip(1)
    start = torch.zeros(8, 1, dtype=torch.long)
    batch = {"input_ids": source, "decoder_input_ids": torch.cat([start, target[:, :-1]], 1), "targets": target}
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


def test_mask_tokens_follows_bert_recipe():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 1000, (64, 256))
    ids[:, 0] = 0  # a special token that must never be chosen
    inputs, targets = mask_tokens(ids, mask_id=2, vocab_size=1000, prob=0.15, generator=gen, keep_ids=(0,))
    chosen = targets != -100
    assert chosen.float().mean().item() == pytest.approx(0.15, abs=0.01)
    assert not chosen[:, 0].any()
    assert torch.equal(targets[chosen], ids[chosen]) and torch.equal(inputs[~chosen], ids[~chosen])
    masked = (inputs[chosen] == 2).float().mean().item()
    kept = (inputs[chosen] == ids[chosen]).float().mean().item()
    assert masked == pytest.approx(0.8, abs=0.02) and kept == pytest.approx(0.1, abs=0.02)


def test_prefix_to_continuation_feeds_a_shifted_target():
    ids = torch.arange(10).repeat(2, 1)
    batch = prefix_to_continuation(ids, start_id=0)
    assert batch["input_ids"][0].tolist() == [0, 1, 2, 3, 4]
    assert batch["targets"][0].tolist() == [5, 6, 7, 8, 9]
    assert batch["decoder_input_ids"][0].tolist() == [0, 5, 6, 7, 8]
    model = Transformer(tiny(kind="encoder-decoder"))
    logits, loss = model(**batch)
    assert logits.shape == (2, 5, 32) and loss.item() > 0
