"""Turn a local Hugging Face model folder into an lmforge run directory.

    out/config.yaml                         RunConfig: the model's shape, tokenizer.path = out/tokenizer.json
    out/tokenizer.json                      the model's tokenizer, special tokens at lmforge's ids 0..6
    out/checkpoints/step_000000/            model.safetensors, config.yaml, state.json, COMPLETE
    out/import.json                         where it came from, and what changed (ids, warnings)

`train` (train.init_from=out), `finetune`, `eval`, `generate` and `serve` read it like any run.
Supported: model_type llama, mistral, qwen2, qwen3 (no sliding window; qwen3 as QK-norm), gpt2, with a
byte-level BPE tokenizer (see hf_tokenizer.py for the id permutation). Anything else, missing
weights, or a tensor whose shape disagrees with config.json gets one message naming it; the run
directory is written under a temporary name and renamed at the end, so a failure leaves nothing.

`resolve_init("hf:DIR")` imports into a cache once and returns the checkpoint directory, for a
recipe's `train.init_from: hf:DIR`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import safetensors.torch
import torch

from lmforge import __version__
from lmforge.config import RunConfig, from_dict, to_yaml
from lmforge.errors import LmforgeError
from lmforge.export.arch import by_model_type
from lmforge.export.hf_tokenizer import import_tokenizer
from lmforge.export.mapping import Reader
from lmforge.model import ModelConfig, Transformer
from lmforge.tokenizer import Tokenizer, TokenizerConfig
from lmforge.train.checkpoint import latest_checkpoint, read_model_config, resolve_checkpoint, save_checkpoint

# Forward-relevant fields: an lmforge export's "lmforge" entry is used only if these agree.
SIGNATURE = (
    "kind",
    "vocab_size",
    "block_size",
    "n_layer",
    "n_head",
    "kv_heads",
    "n_embd",
    "hidden_dim",
    "activation",
    "norm",
    "norm_position",
    "norm_eps",
    "pos",
    "tie_embeddings",
)


def read_hf_config(hf_dir: Path) -> dict:
    path = hf_dir / "config.json"
    if not path.is_file():
        raise LmforgeError(f"{hf_dir} has no config.json (not a Hugging Face model folder)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise LmforgeError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise LmforgeError(f"{path} must hold a JSON object")
    return config


def read_weights(hf_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of model.safetensors / pytorch_model.bin (sharded or not), as float32."""
    files: list[Path] = []
    for single, index in (
        ("model.safetensors", "model.safetensors.index.json"),
        ("pytorch_model.bin", "pytorch_model.bin.index.json"),
    ):
        if (hf_dir / single).is_file():
            files = [hf_dir / single]
        elif (hf_dir / index).is_file():
            try:
                weight_map = json.loads((hf_dir / index).read_text(encoding="utf-8"))["weight_map"]
            except (ValueError, KeyError):
                raise LmforgeError(f"{hf_dir / index} is not a valid weight index") from None
            files = [hf_dir / f for f in sorted(set(weight_map.values()))]
        if files:
            break
    if not files:
        raise LmforgeError(f"{hf_dir} has no weights (model.safetensors or pytorch_model.bin)")
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        if not f.is_file():
            raise LmforgeError(f"weight file {f} is missing (listed in the index)")
        try:
            part = (
                safetensors.torch.load_file(str(f))
                if f.suffix == ".safetensors"
                else torch.load(f, map_location="cpu", weights_only=True)
            )
        except Exception as e:  # noqa: BLE001 -- truncated or corrupt files raise several types
            raise LmforgeError(
                f"cannot read {f}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from None
        tensors.update(part)
    return {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}


def apply_hint(hint, derived: ModelConfig, sd: dict[str, torch.Tensor]) -> ModelConfig:
    """The ModelConfig an lmforge export recorded, when it describes the same function as
    config.json (so dropout, init and bias=false come back); otherwise the derived one. A GPT-2
    export of a bias-free model holds zero biases: they are dropped from `sd` again."""
    if not isinstance(hint, dict) or not isinstance(hint.get("model"), dict):
        return derived
    try:
        recorded = from_dict(ModelConfig, hint["model"])
        recorded.validate()
    except LmforgeError:
        return derived
    same = all(getattr(recorded, f) == getattr(derived, f) for f in SIGNATURE)
    same = same and (recorded.pos != "rope" or recorded.rope_theta == derived.rope_theta)
    biases = [k for k in sd if k.endswith(".bias")]
    if recorded.bias != derived.bias:
        same = same and not recorded.bias and all(not sd[k].any() for k in biases)
    if not same:
        return derived
    if not recorded.bias:
        for k in biases:
            del sd[k]
    return recorded


def permute_vocab(sd: dict[str, torch.Tensor], order: list[int]) -> None:
    """Rows of the embedding (and untied output layer) in the new id order; an added token (-1)
    gets the mean row."""
    idx = torch.tensor([max(o, 0) for o in order])
    new = torch.tensor([o < 0 for o in order])
    for key in ("tok_emb.weight", "lm_head.weight"):
        if key == "lm_head.weight" and sd[key] is sd["tok_emb.weight"]:
            sd[key] = sd["tok_emb.weight"]
            continue
        w = sd[key]
        rows = w[idx].clone()
        rows[new] = w.mean(dim=0)
        sd[key] = rows


def import_hf(
    hf_dir: str | Path, out: str | Path, allow_approximate: bool = False, log: Callable[[str], None] = print
) -> dict:
    """Import the Hugging Face folder `hf_dir` as the lmforge run directory `out`; returns a summary."""
    hf_dir, out = Path(hf_dir), Path(out)
    if not hf_dir.is_dir():
        raise LmforgeError(f"{hf_dir} is not a directory")
    if out.exists():
        raise LmforgeError(f"{out} already exists; choose another --out or remove it")
    config = read_hf_config(hf_dir)
    arch = by_model_type(config.get("model_type"))
    tensors = read_weights(hf_dir)
    mcfg, warnings = arch.model_config(config, set(tensors), allow_approximate)
    try:
        mcfg.validate()
    except LmforgeError as e:
        raise LmforgeError(f"{hf_dir / 'config.json'}: {e}") from None
    reader = Reader(tensors, str(hf_dir))
    sd = arch.from_hf(reader, mcfg)
    reader.check_all_used()
    mcfg = apply_hint(config.get("lmforge"), mcfg, sd)
    tok = import_tokenizer(hf_dir, config, mcfg.vocab_size)
    if not tok.identity:
        permute_vocab(sd, tok.order)
        mcfg.vocab_size = len(tok.order)
    model = Transformer(mcfg)
    model.load_state_dict(sd, strict=True)

    tmp = out.parent / f".{out.name}.tmp-import-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    summary = {
        "source": str(hf_dir.resolve()),
        "model_type": config.get("model_type"),
        "architecture": arch.NAME,
        "params": model.num_params(),
        "vocab_size": mcfg.vocab_size,
        "lmforge_version": __version__,
        "tokenizer": {
            "added": tok.added,
            "renamed": tok.renamed,
            "moved_ids": sum(i != o for i, o in enumerate(tok.order) if o >= 0),
        },
        "warnings": warnings,
    }
    try:
        _write_run(tmp, out, mcfg, model, tok.text, summary)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for w in warnings:
        log(f"warning: {w}")
    return {**summary, "out": str(out)}


def _write_run(
    tmp: Path, out: Path, mcfg: ModelConfig, model: Transformer, tokenizer_text: str, summary: dict
) -> None:
    (tmp / "tokenizer.json").write_text(tokenizer_text, encoding="utf-8")
    vocab = Tokenizer.load(tmp / "tokenizer.json").vocab_size
    cfg = RunConfig(
        name=out.name,
        out_dir=str(out.parent),
        model=mcfg,
        tokenizer=TokenizerConfig(vocab_size=vocab, path=str(out.resolve() / "tokenizer.json")),
    )
    (tmp / "config.yaml").write_text(to_yaml(cfg), encoding="utf-8")
    (tmp / "import.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    save_checkpoint(
        tmp, 0, model, {}, {"step": 0, "tokens": 0, "imported_from": summary["source"]}, cfg, keep_last=1
    )


# ---------------------------------------------------------------- train.init_from: hf:DIR


def default_cache_dir() -> Path:
    return Path(os.environ.get("LMFORGE_CACHE", Path.home() / ".cache" / "lmforge")) / "hf-import"


def _fingerprint(hf_dir: Path) -> str:
    h = hashlib.sha256(str(hf_dir.resolve()).encode())
    for p in sorted(hf_dir.iterdir()):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def resolve_init(spec: str, cache_dir: str | Path | None = None, allow_approximate: bool = False) -> Path:
    """The checkpoint directory for `train.init_from`: "hf:DIR" is imported once into
    `cache_dir` (default $LMFORGE_CACHE/hf-import or ~/.cache/lmforge/hf-import, keyed by the
    folder's path, file sizes and times) and reused; any other value is a run or checkpoint dir."""
    if not spec.startswith("hf:"):
        return resolve_checkpoint(spec)
    hf_dir = Path(spec[3:]).expanduser()
    if not hf_dir.is_dir():
        raise LmforgeError(f"train.init_from={spec}: {hf_dir} is not a directory")
    run = Path(cache_dir or default_cache_dir()) / f"{hf_dir.name}-{_fingerprint(hf_dir)}"
    if latest_checkpoint(run) is None:
        run.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(run, ignore_errors=True)  # a cache entry without a complete checkpoint
        import_hf(hf_dir, run, allow_approximate=allow_approximate, log=lambda s: None)
    return resolve_checkpoint(run)


def apply_init(cfg: RunConfig, cache_dir: str | Path | None = None) -> Path | None:
    """For a recipe with `train.init_from` (a run, a checkpoint, or `hf:DIR`, imported once): make
    `cfg` train that model: its shape replaces cfg.model (the recipe's dropout rates are kept), its
    tokenizer is cfg.tokenizer.path unless one is set, and train.init_from becomes the checkpoint
    directory. Returns that directory, or None when init_from is unset (cfg unchanged)."""
    spec = cfg.train.init_from
    if not spec:
        return None
    ckpt = resolve_init(spec, cache_dir)
    model = read_model_config(ckpt)
    for f in ("embd_dropout", "attn_dropout", "resid_dropout"):
        setattr(model, f, getattr(cfg.model, f))
    cfg.model = model
    if not cfg.tokenizer.path:
        cfg.tokenizer.path = str(ckpt.parent.parent / "tokenizer.json")
    cfg.train.init_from = str(ckpt)
    return ckpt
