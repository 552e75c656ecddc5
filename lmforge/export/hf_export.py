"""Write an lmforge model as a Hugging Face folder that `transformers` loads with `from_pretrained`.

    out/config.json             the architecture (LlamaForCausalLM or GPT2LMHeadModel), plus an
                                "lmforge" entry holding the full ModelConfig (training-only fields
                                such as dropout and init survive export -> import)
    out/generation_config.json  special ids and the run's decoding defaults
    out/model.safetensors       the weights under transformers' names (tied output layer stored once)
    out/tokenizer.json          lmforge's tokenizer, unchanged
    out/tokenizer_config.json   special tokens and the chat template (lmforge.chat.template)
    out/special_tokens_map.json

The folder is written under a temporary name beside `out` and renamed when complete, so a failure
never leaves a folder that looks like an export; an existing `out` is never overwritten.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import safetensors.torch
import torch

from lmforge import __version__
from lmforge.config import read_config
from lmforge.errors import LmforgeError
from lmforge.export.arch import architecture
from lmforge.export.hf_tokenizer import END, SPECIAL_IDS, special_tokens_map, tokenizer_config
from lmforge.model import Transformer
from lmforge.serve.config import SampleConfig
from lmforge.tokenizer import Tokenizer
from lmforge.train.checkpoint import load_weights, resolve_checkpoint
from lmforge.typed_config import to_dict

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def find_tokenizer(run: Path, ckpt: Path) -> Tokenizer:
    """tokenizer.json of a run: beside the given path, the checkpoint, or in the run directory."""
    for d in (run, ckpt, ckpt.parent.parent):
        if (d / "tokenizer.json").is_file():
            return Tokenizer.load(d / "tokenizer.json")
    raise LmforgeError(f"no tokenizer.json in {run} or its run directory")


def export_run(run: str | Path, out: str | Path, dtype: str = "float32") -> dict:
    """Export the latest checkpoint of a run directory (or a checkpoint directory) to `out`.
    Returns a summary {out, architecture, hf_class, params, dtype}."""
    run, out = Path(run), Path(out)
    check_out(out)
    ckpt = resolve_checkpoint(run)
    cfg = read_config(ckpt)
    architecture(cfg.model)  # an unsupported option fails here, before the weights are read
    tok = find_tokenizer(run, ckpt)
    model = Transformer(cfg.model)
    load_weights(model, ckpt)
    return export_model(model.eval(), tok, out, sample=cfg.sample, dtype=dtype)


def export_model(
    model: Transformer,
    tokenizer: Tokenizer,
    out: str | Path,
    sample: SampleConfig | None = None,
    dtype: str = "float32",
) -> dict:
    """Write an in-memory lmforge model and its tokenizer as a Hugging Face folder at `out`."""
    out = Path(out)
    cfg = model.cfg
    arch = architecture(cfg)
    if dtype not in DTYPES:
        raise LmforgeError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if tokenizer.vocab_size > cfg.vocab_size:
        raise LmforgeError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but the model only {cfg.vocab_size}"
        )
    check_out(out)
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    tensors = {
        k: v.to(device="cpu", dtype=DTYPES[dtype]).contiguous() for k, v in arch.to_hf(sd, cfg).items()
    }
    config = {
        **arch.hf_config(cfg, SPECIAL_IDS),
        "torch_dtype": dtype,
        "lmforge": {"version": __version__, "model": to_dict(cfg)},
    }

    tmp = out.parent / f".{out.name}.tmp-export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        safetensors.torch.save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        _write_json(tmp / "config.json", config)
        _write_json(tmp / "generation_config.json", generation_config(sample or SampleConfig()))
        tokenizer.save(tmp / "tokenizer.json")
        _write_json(tmp / "tokenizer_config.json", tokenizer_config(cfg.block_size))
        _write_json(tmp / "special_tokens_map.json", special_tokens_map())
        if out.is_dir():  # check_out allowed only an empty directory
            out.rmdir()
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "out": str(out),
        "architecture": arch.NAME,
        "hf_class": arch.HF_CLASS,
        "params": model.num_params(),
        "dtype": dtype,
    }


def generation_config(sample: SampleConfig) -> dict:
    """Greedy or sampled as the run's `sample` section says; a reply ends at <|end|> or <|endoftext|>
    (lmforge.chat.template.chat_stop_ids)."""
    cfg = {
        "bos_token_id": SPECIAL_IDS["bos_token_id"],
        "eos_token_id": [SPECIAL_IDS["eos_token_id"], END],
        "pad_token_id": SPECIAL_IDS["pad_token_id"],
        "max_new_tokens": sample.max_new_tokens,
        "do_sample": sample.temperature > 0,
    }
    if sample.temperature > 0:
        cfg["temperature"] = sample.temperature
        cfg["top_k"] = sample.top_k or 0  # 0 = no top-k filter in transformers
        if sample.top_p is not None:
            cfg["top_p"] = sample.top_p
    return cfg


def check_out(out: Path) -> None:
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise LmforgeError(f"{out} already exists; choose another --out or remove it")


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
