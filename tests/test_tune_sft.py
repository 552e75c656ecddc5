"""Supervised fine-tuning: packing keeps examples apart, the loss covers only assistant tokens,
LoRA starts at and merges back into the base, and `finetune` turns a checkpoint into a model that
answers in the chat format. Tiny models and a throwaway tokenizer built here."""

from __future__ import annotations

import json

import pytest
import torch

from lmforge.chat.template import encode_chat
from lmforge.config import RunConfig, read_config
from lmforge.errors import LmforgeError
from lmforge.model import ModelConfig, Transformer
from lmforge.serve.config import SampleConfig
from lmforge.tokenizer import TokenizerConfig, train_tokenizer
from lmforge.train.checkpoint import latest_checkpoint, load_model, save_checkpoint
from lmforge.tune.config import FinetuneConfig, LoraConfig
from lmforge.tune.lora import apply_lora, count_params, merge_lora
from lmforge.tune.pack import (
    IGNORE,
    Example,
    batch_loss,
    collate_packed,
    fit_examples,
    make_batches,
    pack_rows,
    segment_forward,
)
from lmforge.tune.reply import chat_reply
from lmforge.tune.sft import finetune

PAIRS = [
    ("hi", "hello there"),
    ("how are you", "fine thanks"),
    ("what is red", "a color"),
    ("name a fruit", "an apple"),
    ("count to three", "one two three"),
    ("say bye", "goodbye now"),
]
GREEDY = SampleConfig(max_new_tokens=12, temperature=0.0, top_k=None)


@pytest.fixture(scope="module")
def tok():
    text = " ".join(q + " " + a for q, a in PAIRS) + " the a of and to is in it that "
    return train_tokenizer([text * 30], TokenizerConfig(vocab_size=320, min_frequency=2))


def tiny(tok, **kw) -> Transformer:
    torch.manual_seed(kw.pop("seed", 0))
    cfg = {"vocab_size": tok.vocab_size, "block_size": 64, "n_layer": 2, "n_embd": 32, "n_head": 4}
    return Transformer(ModelConfig(**{**cfg, **kw}))


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, tok):
    """A run dir holding an (untrained) tiny checkpoint and its tokenizer, as `lmforge train` writes."""
    run = tmp_path_factory.mktemp("runs") / "base"
    cfg = RunConfig(name="base", out_dir=str(run.parent))
    cfg.model = ModelConfig(
        vocab_size=tok.vocab_size,
        block_size=48,
        n_layer=2,
        n_embd=48,
        n_head=4,
        pos="rope",
        activation="swiglu",
        norm="rmsnorm",
        bias=False,
    )
    torch.manual_seed(0)
    run.mkdir()
    tok.save(run / "tokenizer.json")
    save_checkpoint(run, 0, Transformer(cfg.model), {}, {"step": 0}, cfg, keep_last=1)
    return run


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("sft") / "pairs.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in PAIRS
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows * 4) + "{broken\n")
    return path


def examples(tok) -> list[Example]:
    return [
        Example(*encode_chat([{"role": "user", "content": q}, {"role": "assistant", "content": a}], tok))
        for q, a in PAIRS
    ]


# ---------------------------------------------------------------- batches and masks


def test_labels_cover_only_assistant_tokens(tok):
    ex = examples(tok)[0]
    labels = ex.labels()
    kept = [t for t in labels if t != IGNORE]
    assert kept == tok.encode("hello there") + [tok.end_id]
    assert labels[: labels.index(kept[0])] == [IGNORE] * labels.index(
        kept[0]
    )  # system/user/role tokens masked


@pytest.mark.parametrize("pos", ["learned", "sinusoidal", "rope", "alibi"])
def test_packed_example_sees_only_itself(tok, pos):
    """Logits of an example packed after another equal its logits alone: no attention across the
    boundary, positions restart."""
    model = tiny(tok, pos=pos, init_std=0.2).eval()
    a, b = examples(tok)[:2]
    batch = collate_packed([[a, b]], 40, tok.pad_id)
    with torch.no_grad():
        packed = segment_forward(model, batch.input_ids, batch.segments, batch.positions)
        alone_a, _ = model(torch.tensor([a.ids[:-1]]))
        alone_b, _ = model(torch.tensor([b.ids[:-1]]))
    na, nb = a.positions, b.positions
    torch.testing.assert_close(packed[0, :na], alone_a[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed[0, na : na + nb], alone_b[0], atol=1e-5, rtol=1e-5)


def test_packed_forward_checks_its_inputs(tok):
    batch = collate_packed([examples(tok)[:2]], 40, tok.pad_id)
    with pytest.raises(LmforgeError, match="needs position_ids"):
        tiny(tok)(batch.input_ids, segment_ids=batch.segments)
    with pytest.raises(LmforgeError, match="need a decoder model"):
        tiny(tok, kind="encoder")(batch.input_ids, segment_ids=batch.segments, position_ids=batch.positions)


def test_pack_and_pad_give_the_same_loss(tok):
    model = tiny(tok).eval()
    exs = examples(tok)
    packed = make_batches(exs, "pack", 64, 100, tok.pad_id)
    padded = make_batches(exs, "pad", 64, 100, tok.pad_id)
    assert len(packed) == 1 and packed[0].input_ids.shape[0] < len(exs)  # rows shared
    with torch.no_grad():
        sums = [sum(float(batch_loss(model, b, "sum")) for b in bs) for bs in (packed, padded)]
    assert packed[0].label_tokens == padded[0].label_tokens
    assert sums[0] == pytest.approx(sums[1], rel=1e-5)


def test_first_fit_and_overlong_rules(tok):
    rows = pack_rows(
        [Example([0] * 6, [True] * 6), Example([0] * 4, [True] * 4), Example([0] * 3, [True] * 3)], 8
    )
    assert [[e.positions for e in r] for r in rows] == [[5, 3], [2]]
    long = Example(list(range(20)), [False] * 10 + [True] * 10)
    prompt_only = Example(list(range(20)), [False] * 15 + [True] * 5)
    kept, truncated, dropped = fit_examples([long, prompt_only], 12, "truncate")
    assert [e.positions for e in kept] == [12] and truncated == 2 and dropped == 1  # no answer left: dropped
    kept, truncated, dropped = fit_examples([long], 12, "drop")
    assert kept == [] and dropped == 1


# ---------------------------------------------------------------- LoRA


def test_lora_starts_at_base_counts_params_and_merges(tok):
    model = tiny(tok, activation="swiglu")
    x = torch.randint(0, tok.vocab_size, (2, 10))
    with torch.no_grad():
        before, _ = model(x)
    cfg = LoraConfig(rank=4, alpha=8, dropout=0.0, targets=["q_proj", "v_proj", "gate_proj"])
    names = apply_lora(model, cfg)
    assert len(names) == 6  # 3 per layer, 2 layers
    trainable, _ = count_params(model)
    C, F = 32, model.cfg.hidden_dim
    assert trainable == 2 * (4 * (C + C) * 2 + 4 * (C + F))  # rank * (in + out) per adapted layer
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], before)  # B = 0: exactly the base model
        for n, p in model.named_parameters():
            if n.endswith("lora_B"):
                p.normal_(0, 0.5)
        adapted, _ = model(x)
    assert not torch.allclose(adapted, before, atol=1e-3)
    assert merge_lora(model) == 6
    assert {n for n, _ in model.named_parameters()} == {
        n for n, _ in tiny(tok, activation="swiglu").named_parameters()
    }
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], adapted, atol=1e-5, rtol=1e-5)


def test_lora_target_errors(tok):
    with pytest.raises(LmforgeError, match="gate_proj"):
        apply_lora(tiny(tok), LoraConfig(targets=["gate_proj"]))  # plain MLP: no gate
    with pytest.raises(LmforgeError, match="tie_embeddings"):
        apply_lora(tiny(tok), LoraConfig(targets=["lm_head"]))


# ---------------------------------------------------------------- end to end


def test_full_finetune_learns_chat_format(base_run, data, tmp_path, tok):
    out = tmp_path / "chat"
    cfg = FinetuneConfig(
        init=str(base_run),
        data=str(data),
        out=str(out),
        max_steps=120,
        batch_size=4,
        lr=1e-2,
        warmup_steps=5,
        eval_every=0,
        log_every=60,
        device="cpu",
        val_fraction=0.1,
        chat_prompts=["hi"],
        max_new_tokens=8,
    )
    logs = []
    r = finetune(cfg, log=logs.append)
    assert any("pairs.jsonl:25" in line for line in logs)  # the broken line, reported and skipped
    assert r.bad_records == 1 and r.trainable_params == r.total_params
    assert r.val_loss < r.val_loss_before
    assert r.samples == [{"user": "hi", "assistant": "hello there"}]  # ends at <|end|>
    model, mcfg = load_model(out)  # a plain run dir: every other command can load it
    assert mcfg == model.cfg and read_config(latest_checkpoint(out)).name == "chat"
    reply = chat_reply(model, tok, [{"role": "user", "content": "count to three"}], GREEDY)
    assert reply == "one two three"
    assert (out / "tokenizer.json").exists() and (out / "finetune.yaml").exists()
    assert json.loads((out / "finetune.json").read_text())["steps"] == 120
    with pytest.raises(LmforgeError, match="already holds"):
        finetune(cfg, log=logs.append)


def test_lora_finetune_saves_adapter_and_merged_model(base_run, data, tmp_path):
    out = tmp_path / "lora"
    cfg = FinetuneConfig(
        init=str(base_run),
        data=str(data),
        out=str(out),
        method="lora",
        max_steps=6,
        batching="pad",
        lr=1e-2,
        log_every=3,
        device="cpu",
        chat_prompts=[],
        lora=LoraConfig(rank=2, targets=["q_proj", "v_proj"]),
    )
    r = finetune(cfg, log=lambda m: None)
    assert r.trainable_params == 2 * 2 * 2 * (48 + 48)  # layers * adapters * rank * (in + out)
    assert r.total_params == load_model(base_run)[0].num_params()
    assert (out / "lora" / "adapter.safetensors").exists()
    model, _ = load_model(out)
    assert model.num_params() == r.total_params  # merged: the base's shape


def test_bad_inputs(base_run, data, tmp_path):
    with pytest.raises(LmforgeError, match="seq_len=999"):
        finetune(FinetuneConfig(init=str(base_run), data=str(data), out=str(tmp_path / "x"), seq_len=999))
    with pytest.raises(LmforgeError, match="malformed SFT record at pairs.jsonl:25"):
        finetune(
            FinetuneConfig(init=str(base_run), data=str(data), out=str(tmp_path / "y"), on_bad_record="error")
        )
    with pytest.raises(LmforgeError, match="no complete checkpoint|does not exist"):
        finetune(FinetuneConfig(init=str(tmp_path / "nope"), data=str(data)))
    with pytest.raises(LmforgeError, match="init="):
        finetune(FinetuneConfig(data=str(data)))
