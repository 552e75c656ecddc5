"""Supervised fine-tuning (`lmforge finetune`): a checkpoint plus instruction or dialog records in,
a chat model out.

    records --formats--> conversations --template--> (ids, loss mask) --pack--> batches
    base checkpoint --(LoRA adapters)--> training loop --(merge)--> <out>/checkpoints/step_N

The training loop is pre-training's (train/loop.py `train_on`, with tune/source.py's batch source
and its loss-masked, token-weighted objective), so fine-tuning runs under torchrun (FSDP, DDP,
TP), accumulates gradients (grad_accum), saves on SIGINT/SIGTERM and resumes a killed run exactly
from its checkpoints in <out>/train (removed once the fine-tuned model is saved).

The output directory is a run directory like pre-training's (config.yaml of the model,
tokenizer.json, checkpoints/, metrics.jsonl), so generate, chat, serve, eval and export load the
fine-tuned model unchanged. LoRA adapters are merged before saving; the adapter alone is also kept
in <out>/lora/. Held-out conversations (whole records, so the paths of one OpenAssistant tree
never straddle the split) give the validation loss over assistant tokens, before and after.
"""

from __future__ import annotations

import json
import math
import random
import resource
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from lmforge.chat.template import encode_chat
from lmforge.config import RunConfig, read_config, to_yaml
from lmforge.errors import LmforgeError
from lmforge.model import Transformer
from lmforge.tokenizer import Tokenizer
from lmforge.train.checkpoint import latest_checkpoint, resolve_checkpoint, save_checkpoint
from lmforge.train.config import TrainConfig
from lmforge.train.loop import Inputs, train_on
from lmforge.train.metrics import format_duration
from lmforge.train.parallel.launch import is_main_process
from lmforge.train.precision import autocast, resolve_device, resolve_dtype
from lmforge.tune.config import FinetuneConfig
from lmforge.tune.formats import Loaded, load_conversations
from lmforge.tune.lora import apply_lora, count_params, lora_state_dict, merge_lora
from lmforge.tune.pack import Batch, Example, batch_loss, fit_examples, make_batches
from lmforge.tune.source import SftSource, sft_validator

MAX_REPORTED = 5  # malformed records listed one per line; the rest are counted
TRAIN_DIR = "train"  # <out>/train: the training loop's run directory (resumable checkpoints, metrics)


@dataclass
class FinetuneResult:
    out_dir: str
    method: str
    steps: int
    epochs: float
    train_conversations: int
    val_conversations: int
    bad_records: int
    truncated: int
    dropped: int
    trainable_params: int
    total_params: int
    train_loss: float  # mean over the last log interval
    val_loss_before: float | None  # nats per assistant token on the held-out conversations
    val_loss: float | None
    peak_memory_mb: float
    memory_kind: str  # "cuda max allocated" or "process peak RSS"
    tokens_per_s: float  # training positions (padding included) per second
    wall_s: float
    samples: list[dict] = field(default_factory=list)  # [{"user", "assistant"}]
    stopped: str | None = None  # why the run stopped before its last step (a signal: rerun to resume)


def default_log(msg: str) -> None:
    print(f"[finetune] {msg}", flush=True)


# ---------------------------------------------------------------- inputs


def find_tokenizer(init: Path, ckpt: Path) -> Tokenizer:
    for d in (init, ckpt, ckpt.parent.parent):
        if (d / "tokenizer.json").is_file():
            return Tokenizer.load(d / "tokenizer.json")
    raise LmforgeError(f"no tokenizer.json in {init} or its run directory")


def split_records(loaded: Loaded, fraction: float, seed: int) -> tuple[list[list[dict]], list[list[dict]]]:
    """Hold out a seeded `fraction` of the records (all conversations of a record go together)."""
    groups: dict[int, list] = {}
    for rec, conv in zip(loaded.record_of, loaded.conversations):
        groups.setdefault(rec, []).append(conv)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    n_val = round(fraction * len(keys))
    if fraction > 0 and len(keys) >= 2:
        n_val = min(max(n_val, 1), len(keys) - 1)
    val = [c for k in keys[:n_val] for c in groups[k]]
    train = [c for k in keys[n_val:] for c in groups[k]]
    return train, val


def load_data(cfg: FinetuneConfig, log) -> tuple[list[list[dict]], list[list[dict]], int]:
    def load(path: str) -> Loaded:
        loaded = load_conversations(path, cfg.format, cfg.on_bad_record, cfg.oasst_paths, cfg.system_prompt)
        for bad in loaded.bad[:MAX_REPORTED]:
            log(f"skipped malformed record {bad}")
        if len(loaded.bad) > MAX_REPORTED:
            log(f"... and {len(loaded.bad) - MAX_REPORTED} more malformed records")
        log(
            f"data: {path}: {loaded.records} records ({loaded.format}), {len(loaded.conversations)} "
            f"conversations, {len(loaded.bad)} malformed skipped"
        )
        return loaded

    loaded = load(cfg.data)
    bad = len(loaded.bad)
    if cfg.val_data:
        val_loaded = load(cfg.val_data)
        return loaded.conversations, val_loaded.conversations, bad + len(val_loaded.bad)
    train, val = split_records(loaded, cfg.val_fraction, cfg.seed)
    return train, val, bad


def encode(convs: list[list[dict]], tok: Tokenizer) -> list[Example]:
    return [Example(*encode_chat(c, tok)) for c in convs]


# ---------------------------------------------------------------- measuring


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda max allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "process peak RSS"


@torch.no_grad()
def validation_loss(model, batches: list[Batch], device, dtype) -> float | None:
    """Mean cross-entropy (nats) over every assistant token of the held-out set."""
    if not batches:
        return None
    was = model.training
    model.eval()
    total, count = 0.0, 0
    for b in batches:
        with autocast(device, dtype):
            total += float(batch_loss(model, b.to(device), reduction="sum"))
        count += b.label_tokens
    model.train(was)
    return total / max(count, 1)


# ---------------------------------------------------------------- the run


def output_dir(cfg: FinetuneConfig, ckpt: Path) -> Path:
    if cfg.out:
        return Path(cfg.out)
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt
    return run_dir.with_name(run_dir.name + "-sft")


def train_config(
    cfg: FinetuneConfig, run_cfg: RunConfig, out: Path, ckpt: Path, seq_len: int, total_steps: int
) -> RunConfig:
    """The training loop's config of this fine-tune: the base model's shape, the base weights as
    init_from, and the run directory <out>/train (resumable checkpoints, metrics)."""
    tc = TrainConfig(
        max_steps=total_steps,
        batch_size=cfg.batch_size,
        grad_accum=cfg.grad_accum,
        seq_len=seq_len,
        lr=cfg.lr,
        warmup_steps=min(cfg.warmup_steps, total_steps),
        min_lr_ratio=cfg.min_lr_ratio,
        betas=(0.9, 0.999),
        weight_decay=cfg.weight_decay,
        grad_clip=cfg.grad_clip,
        precision=cfg.precision,
        device=cfg.device,
        seed=cfg.seed,
        log_every=cfg.log_every,
        tensorboard=False,
        eval_every=cfg.eval_every,
        ckpt_every=cfg.ckpt_every,
        keep_last=cfg.keep_last,
        init_from=str(ckpt),
        resume=True,
    )
    return replace(run_cfg, name=TRAIN_DIR, out_dir=str(out), train=tc, parallel=cfg.parallel)


def finetune(cfg: FinetuneConfig, log=default_log) -> FinetuneResult:
    """Fine-tune cfg.init on cfg.data and save the result to cfg.out; see the module docstring.

    Training runs on the pre-training loop (train.loop.train_on) in <out>/train: under torchrun
    every rank calls this; a killed run started again resumes from its latest checkpoint there."""
    t_start = time.time()
    cfg.validate()
    main = is_main_process()
    log = log if main else (lambda msg: None)
    ckpt = resolve_checkpoint(cfg.init)
    out = output_dir(cfg, ckpt)
    if latest_checkpoint(out) is not None:
        raise LmforgeError(f"{out} already holds a model checkpoint; choose another out=")
    settings = to_yaml(cfg)
    if (out / "finetune.yaml").exists() and latest_checkpoint(out / TRAIN_DIR) is not None:
        if (out / "finetune.yaml").read_text(encoding="utf-8") != settings:
            raise LmforgeError(
                f"{out} holds an interrupted fine-tune with other settings ({out / 'finetune.yaml'}); "
                "run it with the same settings to resume, or choose another out="
            )
        log(f"resuming the interrupted fine-tune in {out}")
    run_cfg = read_config(ckpt)
    mcfg = run_cfg.model
    if mcfg.kind != "decoder":
        raise LmforgeError(f"finetune trains decoder (chat) models; {ckpt} is a {mcfg.kind}")
    tok = find_tokenizer(Path(cfg.init), ckpt)
    if tok.vocab_size > mcfg.vocab_size:
        raise LmforgeError(f"the tokenizer has {tok.vocab_size} tokens but the model only {mcfg.vocab_size}")
    seq_len = cfg.seq_len or mcfg.block_size
    if seq_len > mcfg.block_size:
        raise LmforgeError(f"seq_len={seq_len} is longer than the model's block_size={mcfg.block_size}")

    train_convs, val_convs, n_bad = load_data(cfg, log)
    train_ex, trunc, drop = fit_examples(encode(train_convs, tok), seq_len, cfg.overlong)
    val_ex, vtrunc, vdrop = fit_examples(encode(val_convs, tok), seq_len, cfg.overlong)
    if trunc + drop + vtrunc + vdrop:
        log(
            f"overlong={cfg.overlong}: {trunc + vtrunc} conversations cut to {seq_len} tokens, "
            f"{drop + vdrop} dropped (longer than seq_len, or no assistant token left)"
        )
    if not train_ex:
        raise LmforgeError("no training conversation is left after the overlong rule")
    log(f"split: {len(train_ex)} train / {len(val_ex)} held-out conversations")

    rows_per_step = cfg.batch_size * cfg.grad_accum
    steps_per_epoch = SftSource(train_ex, cfg.batching, seq_len, tok.pad_id, cfg.seed).steps_per_epoch(
        rows_per_step
    )
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    train_cfg = train_config(cfg, run_cfg, out, ckpt, seq_len, total_steps)
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    val_file = out / TRAIN_DIR / "val_before.json"
    counts: dict[str, int] = {}
    final: dict[str, dict] = {}

    def prepare_model(model: torch.nn.Module) -> None:
        """On the full model with the base weights: the held-out loss before (once, rank 0), then LoRA."""
        if main and val_ex and not val_file.exists():
            batches = make_batches(val_ex, "pad", seq_len, cfg.batch_size, tok.pad_id)
            before = validation_loss(
                model, batches, next(model.parameters()).device, resolve_dtype(cfg.precision, device)
            )
            log(f"held-out loss before: {before:.4f} nats per assistant token")
            val_file.parent.mkdir(parents=True, exist_ok=True)
            val_file.write_text(json.dumps({"val_loss": before}) + "\n", encoding="utf-8")
        if cfg.method == "lora":
            wrapped = apply_lora(model, cfg.lora)
            log(
                f"lora: rank {cfg.lora.rank}, alpha {cfg.lora.alpha:g}, dropout {cfg.lora.dropout:g} on "
                f"{len(wrapped)} layers ({', '.join(cfg.lora.targets)})"
            )
        trainable, total = count_params(model)
        if cfg.method == "lora":
            total -= trainable  # the base model's size; the adapters are what trains
        counts.update(trainable=trainable, total=total)
        log(
            f"model: {total:,} parameters, {trainable:,} trainable ({100 * trainable / total:.2f}% of that), "
            f"method={cfg.method}, batching={cfg.batching}, seq_len={seq_len}, {total_steps} steps"
        )

    def on_complete(par) -> None:
        if par.env.distributed:  # FSDP/TP shards gathered on rank 0's CPU
            final["state"] = full_state_dict(par.module)
        else:  # the trained model itself: no second copy in memory
            final["model"] = par.module

    inputs = Inputs(
        check=lambda seq_len, env: None,
        source=lambda seq_len, env: SftSource(
            train_ex, cfg.batching, seq_len, tok.pad_id, cfg.seed, env.dp_rank, env.layout.dp
        ),
        validator=lambda seq_len, is_main: sft_validator(val_ex, seq_len, cfg.batch_size, tok.pad_id),
        prepare_model=prepare_model,
        on_complete=on_complete,
    )
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "finetune.yaml").write_text(settings, encoding="utf-8")
    tr = train_on(train_cfg, inputs, tok, out / TRAIN_DIR)
    if tr.diverged:  # nothing is saved; the base checkpoint is untouched
        raise LmforgeError(f"{tr.stop_reason}; lower lr= (now {cfg.lr:g})")
    peak, kind = peak_memory_mb(device)
    val_before = json.loads(val_file.read_text(encoding="utf-8"))["val_loss"] if val_file.exists() else None
    result = FinetuneResult(
        out_dir=str(out),
        method=cfg.method,
        steps=tr.steps,
        epochs=tr.steps / max(steps_per_epoch, 1),
        train_conversations=len(train_ex),
        val_conversations=len(val_ex),
        bad_records=n_bad,
        truncated=trunc + vtrunc,
        dropped=drop + vdrop,
        trainable_params=counts.get("trainable", 0),
        total_params=counts.get("total", 0),
        train_loss=tr.final_train_loss,
        val_loss_before=val_before,
        val_loss=tr.val_loss,
        peak_memory_mb=peak,
        memory_kind=kind,
        tokens_per_s=tr.tokens_per_s,
        wall_s=time.time() - t_start,
        stopped=tr.stop_reason if tr.stopped_early else None,
    )
    if result.stopped or not main:
        return result

    model = final.get("model")
    if model is None:
        model = Transformer(mcfg)
        if cfg.method == "lora":
            apply_lora(model, cfg.lora)
        model.load_state_dict(final["state"])
    if cfg.method == "lora":
        save_adapter(model, cfg, out)
        merge_lora(model)
    model.eval()
    saved = save_model(out, model, run_cfg, tok, tr.steps, cfg)
    if (out / TRAIN_DIR / "metrics.jsonl").exists():  # the run dir's own metrics, as pre-training's
        shutil.copyfile(out / TRAIN_DIR / "metrics.jsonl", out / "metrics.jsonl")
    shutil.rmtree(out / TRAIN_DIR / "checkpoints", ignore_errors=True)  # the resume state is no longer needed
    log(f"saved {saved} ({format_duration(tr.wall_s)} training, peak memory {peak:,.0f} MB {kind})")
    result.samples = sample_chats(model, tok, cfg, log)
    result.wall_s = time.time() - t_start
    (out / "finetune.json").write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    return result


def full_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on the CPU, gathered from this run's FSDP/TP shards (collective
    under torchrun; rank 0 gets them)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_adapter(model, cfg: FinetuneConfig, out: Path) -> None:
    import safetensors.torch

    (out / "lora").mkdir(exist_ok=True)
    safetensors.torch.save_file(lora_state_dict(model), str(out / "lora" / "adapter.safetensors"))
    meta = {
        "rank": cfg.lora.rank,
        "alpha": cfg.lora.alpha,
        "dropout": cfg.lora.dropout,
        "targets": cfg.lora.targets,
        "base": cfg.init,
    }
    (out / "lora" / "adapter_config.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def save_model(out: Path, model, run_cfg: RunConfig, tok: Tokenizer, step: int, cfg: FinetuneConfig) -> Path:
    """A complete checkpoint in the run-dir layout (written atomically by train.checkpoint)."""
    run_cfg = RunConfig(**{**run_cfg.__dict__, "name": out.name, "out_dir": str(out.parent)})
    tok.save(out / "tokenizer.json")
    state = {"step": step, "finetune": {"init": cfg.init, "data": cfg.data, "method": cfg.method}}
    return save_checkpoint(out, step, model, {}, state, run_cfg, keep_last=1)


def sample_chats(model, tok: Tokenizer, cfg: FinetuneConfig, log) -> list[dict]:
    from lmforge.serve.config import SampleConfig
    from lmforge.tune.reply import chat_reply

    sc = SampleConfig(
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.chat_temperature,
        top_k=cfg.chat_top_k,
        seed=cfg.seed,
    )
    out = []
    if cfg.chat_prompts:
        log("chat with the fine-tuned model:")
    for prompt in cfg.chat_prompts:
        messages = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
        messages.append({"role": "user", "content": prompt})
        try:
            reply = chat_reply(model, tok, messages, sc)
        except LmforgeError as e:
            reply = f"(no reply: {e})"
        log(f"user: {prompt}")
        log(f"assistant: {reply}")
        out.append({"user": prompt, "assistant": reply})
    return out
