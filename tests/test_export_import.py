"""Import from Hugging Face, proved against transformers: random Llama (Llama 3-style tokenizer),
Qwen2 (biases on q/k/v, padded vocabulary) and GPT-2 (GPT-2-style tokenizer) folders built here
become lmforge runs whose logits and tokens match the originals once the special-token id
permutation is undone; import -> export -> transformers agrees with the original; bad folders
get a message naming the problem and leave nothing behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import safetensors.torch
from tokenizers import Tokenizer as RawTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from lmforge.config import RunConfig
from lmforge.errors import LmforgeError
from lmforge.export import apply_init, export_run, import_hf, resolve_init
from lmforge.export.cli import add_parsers, run_export, run_import
from lmforge.serve.config import SampleConfig
from lmforge.serve.generate import generate
from lmforge.tokenizer import SPECIAL_TOKENS, Tokenizer
from lmforge.train.checkpoint import load_model

TEXT = (
    "The quick brown fox jumps over the lazy dog. Models read text and write text; héllo wörld ☃ 日本. "
    "Numbers 12345, tabs\tand  double  spaces.\n"
) * 8
PROBES = ["The lazy fox reads.", "  héllo\t☃ 12 dogs!", "<|endoftext|> is plain text to lmforge"]


def byte_bpe(specials: list[str], vocab: int = 330, bos: str | None = None) -> RawTokenizer:
    """A byte-level BPE like GPT-2's / Llama 3's: merges first, special tokens appended at the end."""
    t = RawTokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    t.train_from_iterator(
        [TEXT],
        trainers.BpeTrainer(
            vocab_size=vocab, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    t.add_special_tokens(specials)
    if bos is not None:  # Llama 3: BOS prepended by the post-processor
        t.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, t.token_to_id(bos))]
        )
    return t


def perturb(model) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))


def save_hf(folder: Path, model, raw: RawTokenizer, **special) -> Path:
    perturb(model)
    model.eval().save_pretrained(folder)
    transformers.PreTrainedTokenizerFast(tokenizer_object=raw, **special).save_pretrained(folder)
    return folder


def llama3(folder: Path) -> Path:
    raw = byte_bpe(["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"], bos="<|begin_of_text|>")
    V = raw.get_vocab_size()
    cfg = transformers.LlamaConfig(
        vocab_size=V,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rope_theta=50000.0,
        tie_word_embeddings=False,
        rms_norm_eps=1e-5,
        bos_token_id=V - 3,
        eos_token_id=V - 2,
    )
    return save_hf(
        folder,
        transformers.LlamaForCausalLM(cfg),
        raw,
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
    )


def qwen2(folder: Path) -> Path:
    raw = byte_bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    V = raw.get_vocab_size() + 5  # padded past the tokenizer, as Qwen2's 151936 rows
    cfg = transformers.Qwen2Config(
        vocab_size=V,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
    )
    return save_hf(
        folder, transformers.Qwen2ForCausalLM(cfg), raw, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )


def qwen3(folder: Path) -> Path:
    """Qwen3: Llama plus per-head q_norm/k_norm (lmforge's model.qk_norm)."""
    raw = byte_bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    V = raw.get_vocab_size()
    cfg = transformers.Qwen3Config(
        vocab_size=V,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        rms_norm_eps=1e-6,
    )
    return save_hf(
        folder, transformers.Qwen3ForCausalLM(cfg), raw, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )


def gpt2(folder: Path, activation: str = "gelu") -> Path:
    raw = byte_bpe(["<|endoftext|>"])
    V = raw.get_vocab_size()
    cfg = transformers.GPT2Config(
        vocab_size=V,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        activation_function=activation,
        bos_token_id=V - 1,
        eos_token_id=V - 1,
    )
    return save_hf(
        folder, transformers.GPT2LMHeadModel(cfg), raw, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )


BUILDERS = {
    "llama3": llama3,
    "qwen2": qwen2,
    "qwen3": qwen3,
    "gpt2": gpt2,
    "gpt2-relu2": lambda folder: gpt2(folder, "relu2"),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {name: build(root / name) for name, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def imported(folders, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {
        name: (import_hf(folder, root / name, log=lambda s: None), root / name)
        for name, folder in folders.items()
    }


def id_map(folder: Path, run: Path, summary: dict) -> torch.Tensor:
    """map[old id] = the imported model's id for it, rebuilt from the two tokenizer files by token
    string; rows without a token (vocabulary padding) move up past the added tokens."""
    old = RawTokenizer.from_file(str(folder / "tokenizer.json")).get_vocab(with_added_tokens=True)
    new = RawTokenizer.from_file(str(run / "tokenizer.json"))
    V = json.loads((folder / "config.json").read_text())["vocab_size"]
    mapping = torch.arange(V) + len(summary["tokenizer"]["added"])
    for tok, i in old.items():
        mapping[i] = new.token_to_id(summary["tokenizer"]["renamed"].get(tok, tok))
    assert sorted(mapping.tolist()) == sorted(set(mapping.tolist()))  # a permutation into the new ids
    return mapping


def hf_model(folder: Path):
    return transformers.AutoModelForCausalLM.from_pretrained(folder).eval()


@pytest.mark.parametrize("name", BUILDERS)
def test_imported_model_computes_the_same_function(folders, imported, name):
    folder, (summary, run) = folders[name], imported[name]
    mapping = id_map(folder, run, summary)
    theirs_model = hf_model(folder)
    ours, cfg = load_model(run)
    assert cfg.vocab_size == len(mapping) + len(summary["tokenizer"]["added"])
    old = torch.randint(0, len(mapping), (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = theirs_model(input_ids=old).logits
        mine = ours(mapping[old])[0][:, :, mapping]  # the original vocabulary's columns, in its order
    torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", BUILDERS)
def test_imported_tokenizer_encodes_the_same_tokens(folders, imported, name):
    folder, (summary, run) = folders[name], imported[name]
    mapping = id_map(folder, run, summary)
    # The file itself, read by `tokenizers`: transformers 5's AutoTokenizer swaps in Qwen2's own
    # pre-tokenizer for model_type qwen2, which this synthetic folder's file does not use.
    theirs = RawTokenizer.from_file(str(folder / "tokenizer.json"))
    theirs.encode_special_tokens = True  # as lmforge: a special token's string in text is plain text
    ours = Tokenizer.load(run)
    assert [ours.decode([i]) for i in range(7)] == SPECIAL_TOKENS
    for text in PROBES:
        assert ours.encode(text) == mapping[theirs.encode(text, add_special_tokens=False).ids].tolist()
        assert ours.decode(ours.encode(text)) == text
    expected_added = 6  # all but <|endoftext|>
    assert len(summary["tokenizer"]["added"]) == expected_added
    assert summary["tokenizer"]["renamed"] == (
        {"<|end_of_text|>": "<|endoftext|>"} if name == "llama3" else {}
    )


@pytest.mark.parametrize("name", BUILDERS)
def test_import_then_export_agrees_with_the_original(folders, imported, tmp_path, name):
    folder, (summary, run) = folders[name], imported[name]
    mapping = id_map(folder, run, summary)
    export_run(run, tmp_path / "hf")
    again, original = hf_model(tmp_path / "hf"), hf_model(folder)
    old = torch.randint(0, len(mapping), (1, 48), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(
            again(input_ids=mapping[old]).logits[:, :, mapping],
            original(input_ids=old).logits,
            atol=1e-4,
            rtol=0,
        )
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    ours = Tokenizer.load(run)
    assert hf_tok.encode(PROBES[1], add_special_tokens=False) == ours.encode(PROBES[1])
    if name == "llama3":  # the post-processor still prepends <|begin_of_text|>, at its new id
        bos = RawTokenizer.from_file(str(run / "tokenizer.json")).token_to_id("<|begin_of_text|>")
        assert hf_tok("hi")["input_ids"][0] == bos


def test_lmforge_stages_use_the_imported_run(imported, tmp_path):
    """generate and eval read the imported run; finetune trains it with lmforge's chat template and
    the result exports back to a model transformers runs."""
    from lmforge.eval import LmforgeLM
    from lmforge.tune.config import FinetuneConfig
    from lmforge.tune.sft import finetune

    _, run = imported["llama3"]
    model, _ = load_model(run)
    tok = Tokenizer.load(run)
    text = generate(model, tok, "The quick", SampleConfig(max_new_tokens=8, temperature=0.0, top_k=None))
    assert isinstance(text, str)
    lm = LmforgeLM.from_run(run)
    assert lm.eot_token_id == 0 and lm.max_length == 64
    assert "<|end_of_text|>" not in tok.decode([0])  # eos renamed to lmforge's document boundary

    data = tmp_path / "chat.jsonl"
    chat = {
        "messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi there"}]
    }
    data.write_text((json.dumps(chat) + "\n") * 8)
    finetune(
        FinetuneConfig(
            init=str(run),
            data=str(data),
            out=str(tmp_path / "sft"),
            max_steps=2,
            batch_size=2,
            eval_every=0,
            device="cpu",
            chat_prompts=[],
            val_fraction=0.25,
        ),
        log=lambda m: None,
    )
    export_run(tmp_path / "sft", tmp_path / "hf")
    hf = hf_model(tmp_path / "hf")
    tuned, _ = load_model(tmp_path / "sft")
    ids = torch.tensor([tok.encode("The quick brown fox")])
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids).logits, tuned(ids)[0], atol=1e-4, rtol=0)


# ---------------------------------------------------------------- bad input


@pytest.fixture
def llama_copy(folders, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(folders["llama3"], dst)
    return dst


def edit_config(folder: Path, **changes) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


def edit_weights(folder: Path, fn) -> None:
    path = folder / "model.safetensors"
    tensors = safetensors.torch.load_file(str(path))
    fn(tensors)
    safetensors.torch.save_file(tensors, str(path), metadata={"format": "pt"})


BAD = {
    "unknown model_type": (lambda f: edit_config(f, model_type="bert"), "model_type='bert' is not supported"),
    "no config": (lambda f: (f / "config.json").unlink(), "no config.json"),
    "no weights": (lambda f: (f / "model.safetensors").unlink(), "has no weights"),
    "corrupt weights": (lambda f: (f / "model.safetensors").write_bytes(b"\x00" * 64), "cannot read"),
    "shape mismatch": (lambda f: edit_config(f, intermediate_size=48), "has shape .* implies"),
    "missing tensor": (
        lambda f: edit_weights(f, lambda t: t.pop("model.layers.1.mlp.up_proj.weight")),
        "missing tensor 'model.layers.1.mlp.up_proj.weight'",
    ),
    "extra tensor": (
        lambda f: edit_weights(
            f, lambda t: t.update({"model.layers.0.self_attn.q_norm.weight": torch.ones(8)})
        ),
        "no place for: model.layers.0.self_attn.q_norm.weight",
    ),
    "rope scaling": (
        lambda f: edit_config(f, rope_parameters={"rope_type": "llama3", "rope_theta": 5e5}),
        "rope scaling 'llama3'",
    ),
    "sliding window": (
        lambda f: edit_config(f, model_type="mistral", sliding_window=16),
        "sliding_window=16",
    ),
    "head_dim": (lambda f: edit_config(f, head_dim=16), "head_dim=16"),
    "activation": (lambda f: edit_config(f, hidden_act="relu"), "hidden_act='relu'"),
    "sentencepiece tokenizer": (
        lambda f: (f / "tokenizer.json").write_text(
            json.dumps(
                {
                    **json.loads((f / "tokenizer.json").read_text()),
                    "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}]},
                }
            )
        ),
        "byte-level BPE tokenizers only",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_folder_is_named_and_leaves_nothing(llama_copy, tmp_path, case):
    damage, message = BAD[case]
    damage(llama_copy)
    with pytest.raises(LmforgeError, match=message):
        import_hf(llama_copy, tmp_path / "runs" / "out", log=lambda s: None)
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []


def test_gpt2_tanh_gelu_needs_allow_approximate(tmp_path):
    folder = gpt2(tmp_path / "gpt2new", activation="gelu_new")
    with pytest.raises(LmforgeError, match="--allow-approximate"):
        import_hf(folder, tmp_path / "run", log=lambda s: None)
    logged = []
    summary = import_hf(folder, tmp_path / "run", allow_approximate=True, log=logged.append)
    assert summary["warnings"] and "tanh" in logged[0]
    ours, _ = load_model(tmp_path / "run")
    theirs = hf_model(folder)
    mapping = id_map(folder, tmp_path / "run", summary)
    ids = torch.arange(40)[None]
    with torch.no_grad():
        diff = (ours(mapping[ids])[0][:, :, mapping] - theirs(input_ids=ids).logits).abs().max().item()
    assert 0 < diff < 1e-2  # close, not equal: the reason it is opt-in


# ---------------------------------------------------------------- init_from and the CLI


def test_resolve_init_imports_once_and_apply_init_sets_the_recipe(folders, tmp_path):
    spec = f"hf:{folders['qwen2']}"
    ckpt = resolve_init(spec, cache_dir=tmp_path / "cache")
    stamp = (ckpt / "model.safetensors").stat().st_mtime_ns
    assert resolve_init(spec, cache_dir=tmp_path / "cache") == ckpt
    assert (ckpt / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not imported again
    cfg = RunConfig()
    cfg.train.init_from, cfg.model.resid_dropout = spec, 0.1
    assert apply_init(cfg, cache_dir=tmp_path / "cache") == ckpt
    assert cfg.model.pos == "rope" and cfg.model.bias and cfg.model.resid_dropout == 0.1
    assert cfg.train.init_from == str(ckpt) and Path(cfg.tokenizer.path).is_file()
    with pytest.raises(LmforgeError, match="not a directory"):
        resolve_init(f"hf:{tmp_path / 'nope'}", cache_dir=tmp_path / "cache")


def test_cli_import_and_export(folders, tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser(prog="lmforge")
    add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["import", "--hf", str(folders["gpt2"]), "--out", str(tmp_path / "run")])
    assert run_import(args) == 0
    args = parser.parse_args(["export", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "hf")])
    assert run_export(args) == 0
    err = capsys.readouterr().err
    assert "GPT2LMHeadModel" in err and str(tmp_path / "hf") in err and "added <|pad|>" in err
    with pytest.raises(LmforgeError, match="already exists"):
        run_import(
            parser.parse_args(["import", "--hf", str(folders["gpt2"]), "--out", str(tmp_path / "run")])
        )
