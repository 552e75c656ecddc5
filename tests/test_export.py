"""Export to Hugging Face, proved against transformers itself: same logits (1e-4, fp32) and the same
greedy tokens for Llama- and GPT-2-shaped lmforge models (GQA, tied/untied, biases or none);
export -> import gives back the exact config and weights; the exported tokenizer, chat template
included, encodes as lmforge does; options no architecture has are refused by name."""

from __future__ import annotations

import json
from itertools import islice

import pytest
import torch

transformers = pytest.importorskip("transformers")

from lmforge.chat.template import render_chat
from lmforge.data.documents import embedded_corpus
from lmforge.errors import LmforgeError
from lmforge.export import ExportError, export_model, export_run, import_hf
from lmforge.model import ModelConfig, Transformer
from lmforge.serve.config import SampleConfig
from lmforge.serve.generate import generate_tokens
from lmforge.tokenizer import Tokenizer, TokenizerConfig, train_tokenizer
from lmforge.train.checkpoint import load_model

SHAPES = {
    "llama-gqa-untied": {
        "pos": "rope",
        "norm": "rmsnorm",
        "activation": "swiglu",
        "bias": False,
        "n_kv_head": 2,
        "tie_embeddings": False,
        "rope_theta": 500.0,
    },
    "llama-mqa-bias-tied-geglu": {
        "pos": "rope",
        "norm": "rmsnorm",
        "activation": "geglu",
        "bias": True,
        "n_kv_head": 1,
        "tie_embeddings": True,
    },
    "gpt2-tied": {
        "pos": "learned",
        "norm": "layernorm",
        "activation": "gelu",
        "bias": True,
        "tie_embeddings": True,
    },
    "gpt2-untied-nobias-relu": {
        "pos": "learned",
        "norm": "layernorm",
        "activation": "relu",
        "bias": False,
        "tie_embeddings": False,
        "embd_dropout": 0.1,
        "resid_dropout": 0.05,
    },
    "qwen3-qknorm-gqa-untied": {
        "pos": "rope",
        "norm": "rmsnorm",
        "activation": "swiglu",
        "bias": False,
        "n_kv_head": 2,
        "tie_embeddings": False,
        "qk_norm": True,
    },
    "gpt2-relu2-tied": {
        "pos": "learned",
        "norm": "layernorm",
        "activation": "relu2",
        "bias": True,
        "tie_embeddings": True,
    },
}
HF_CLASS = {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM", "gpt2": "GPT2LMHeadModel"}
TEXTS = [
    "Hello world, this is a test.",
    "  two  spaces\tand\ttabs\n\nnew lines  ",
    "héllo wörld ☃ 日本語 👩‍👩‍👧",
    "x" * 300,
    "numbers 1234567 and symbols #$%&*()",
]
CHATS = [
    [{"role": "user", "content": "Hi there!"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And 3+3?\nThanks ☃"},
    ],
]


@pytest.fixture(scope="module", autouse=True)
def quiet_transformers():
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    texts = [d["text"][:2000] for d in islice(embedded_corpus(), 60)] + TEXTS
    return train_tokenizer(texts, TokenizerConfig(vocab_size=400))


def build(tok: Tokenizer, seed: int = 0, **kw) -> Transformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        vocab_size=tok.vocab_size + 3, block_size=64, n_layer=2, n_head=4, n_embd=32, init_std=0.1, **kw
    )  # 3 padding rows past the tokenizer, as the trainer allows
    model = Transformer(cfg).eval()
    with torch.no_grad():  # untrained norms are 1 and biases 0: perturb them so their mapping is tested
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def exported(tok, tmp_path_factory):
    """{shape: (lmforge model, export folder, transformers model)}, built once."""
    root = tmp_path_factory.mktemp("export")
    out = {}
    for i, (name, kw) in enumerate(SHAPES.items()):
        model = build(tok, seed=i, **kw)
        export_model(model, tok, root / name)
        hf = transformers.AutoModelForCausalLM.from_pretrained(root / name).eval()
        out[name] = (model, root / name, hf)
    return out


@pytest.mark.parametrize("shape", SHAPES)
def test_logits_match_transformers(exported, shape):
    model, _folder, hf = exported[shape]
    assert type(hf).__name__ == HF_CLASS[shape.split("-")[0]]
    ids = torch.randint(0, model.cfg.vocab_size, (2, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(ids)[0], hf(input_ids=ids).logits
    assert ours.shape == theirs.shape
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=0)
    if model.cfg.bias:  # GPT-2 holds zero biases for a bias-free model
        assert sum(p.numel() for p in hf.parameters()) == model.num_params()


@pytest.mark.parametrize("shape", SHAPES)
def test_greedy_generation_identical(exported, tok, shape):
    model, _, hf = exported[shape]
    prompt = tok.encode("The model reads text and")
    n = 40
    ours = list(generate_tokens(model, prompt, SampleConfig(max_new_tokens=n, temperature=0.0, top_k=None)))
    gen = transformers.GenerationConfig(
        max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=1, eos_token_id=None
    )
    with torch.no_grad():
        theirs = hf.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            generation_config=gen,
        )[0, len(prompt) :].tolist()
    assert len(ours) == n and ours == theirs


@pytest.mark.parametrize("shape", SHAPES)
def test_export_then_import_is_bit_exact(exported, tok, tmp_path, shape):
    model, folder, _ = exported[shape]
    import_hf(folder, tmp_path / "run", log=lambda s: None)
    back, cfg = load_model(tmp_path / "run")
    assert cfg == model.cfg  # dropout, init, bias=false and padding rows included
    a, b = model.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert Tokenizer.load(tmp_path / "run").hash == tok.hash


@pytest.mark.parametrize("shape", ["llama-gqa-untied", "gpt2-tied"])
def test_tokenizer_and_chat_template_match_autotokenizer(exported, tok, shape):
    folder = exported[shape][1]
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
    for text in TEXTS:
        assert hf_tok.encode(text, add_special_tokens=False) == tok.encode(text)
        assert hf_tok(text)["input_ids"] == tok.encode(text)  # no BOS/EOS added by default either
        assert hf_tok.decode(tok.encode(text)) == text
    assert [hf_tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|pad|>", "<|user|>", "<|end|>")] == [
        tok.eot_id,
        tok.pad_id,
        tok.user_id,
        tok.end_id,
    ]
    assert (hf_tok.bos_token_id, hf_tok.eos_token_id, hf_tok.pad_token_id) == (
        tok.eot_id,
        tok.eot_id,
        tok.pad_id,
    )
    for chat in CHATS:
        for gen_prompt in (True, False):
            ids = hf_tok.apply_chat_template(chat, add_generation_prompt=gen_prompt, tokenize=True)
            ids = ids["input_ids"] if not isinstance(ids, list) else ids  # transformers >= 5 returns a dict
            assert ids == render_chat(chat, tok, gen_prompt)


def test_generation_config_and_files(exported):
    folder = exported["llama-gqa-untied"][1]
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    gen = transformers.GenerationConfig.from_pretrained(folder)
    assert gen.eos_token_id == [0, 6] and gen.pad_token_id == 1  # a chat reply ends at <|end|>
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["num_key_value_heads"] == 2 and cfg["lmforge"]["model"]["n_kv_head"] == 2


@pytest.mark.parametrize(
    "kw, option",
    [
        ({"pos": "alibi"}, "model.pos='alibi'"),
        ({"pos": "sinusoidal"}, "model.pos='sinusoidal'"),
        ({"norm_position": "post"}, "model.norm_position='post'"),
        ({"kind": "encoder"}, "model.kind='encoder'"),
        ({"kind": "encoder-decoder"}, "model.kind='encoder-decoder'"),
        ({"pos": "rope", "norm": "layernorm", "activation": "swiglu"}, "model.norm='layernorm'"),
        ({"pos": "rope", "norm": "rmsnorm", "activation": "gelu"}, "model.activation='gelu'"),
        ({"pos": "learned", "norm": "rmsnorm"}, "model.norm='rmsnorm'"),
        ({"pos": "learned", "activation": "swiglu"}, "model.activation='swiglu'"),
        ({"pos": "learned", "n_kv_head": 2}, "model.n_kv_head=2"),
        ({"logit_softcap": 30.0}, "model.logit_softcap=30.0"),
        (
            {"pos": "rope", "norm": "rmsnorm", "activation": "swiglu", "logit_softcap": 15.0},
            "model.logit_softcap=15.0",
        ),
        ({"pos": "learned", "qk_norm": True}, "model.qk_norm=True"),
        (
            {"pos": "rope", "norm": "rmsnorm", "activation": "swiglu", "qk_norm": True, "bias": True},
            "model.bias=True",
        ),
        ({"pos": "rope", "norm": "rmsnorm", "activation": "relu2"}, "model.activation='relu2'"),
    ],
)
def test_unsupported_option_is_named(tok, tmp_path, kw, option):
    model = Transformer(
        ModelConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=4, n_embd=16, **kw)
    )
    with pytest.raises(ExportError, match=option.replace("(", r"\(")):
        export_model(model, tok, tmp_path / "out")
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_export_run_from_run_dir_and_refuses_existing_out(tok, tmp_path):
    from lmforge.tiny import make_tiny_run

    run = make_tiny_run(tmp_path / "run")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(LmforgeError, match="already exists"):
        export_run(run, tmp_path / "taken")
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    summary = export_run(run, tmp_path / "hf", dtype="bfloat16")
    assert summary["hf_class"] == "GPT2LMHeadModel"
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert next(hf.parameters()).dtype == torch.bfloat16
    with pytest.raises(LmforgeError, match="no complete checkpoint"):
        export_run(tmp_path / "taken", tmp_path / "hf2")
