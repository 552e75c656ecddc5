"""Supervised fine-tuning (`lmforge finetune`): a checkpoint plus instruction or dialog records in,
a chat model out.

    records --formats--> conversations --template--> (ids, loss mask) --pack--> batches
    base checkpoint --(LoRA adapters)--> training loop --(merge)--> <out>/checkpoints/step_N

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
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from lmforge.config import RunConfig, to_yaml
from lmforge.errors import LmforgeError
from lmforge.model import Transformer
from lmforge.tokenizer import Tokenizer
from lmforge.train.checkpoint import (
    latest_checkpoint,
    load_weights,
    read_config,
    resolve_checkpoint,
    save_checkpoint,
)
from lmforge.train.config import TrainConfig
from lmforge.train.metrics import MetricsLog, Progress, format_duration
from lmforge.train.optim import param_groups
from lmforge.train.precision import autocast, grad_scaler, resolve_device, resolve_dtype
from lmforge.train.schedule import lr_at
from lmforge.tune.config import FinetuneConfig
from lmforge.tune.formats import Loaded, load_conversations
from lmforge.tune.lora import apply_lora, count_params, lora_state_dict, merge_lora
from lmforge.tune.pack import Batch, Example, batch_loss, fit_examples, make_batches
from lmforge.tune.template import encode_chat

MAX_REPORTED = 5  # malformed records listed one per line; the rest are counted


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
    tokens_per_s: float
    wall_s: float
    samples: list[dict] = field(default_factory=list)  # [{"user", "assistant"}]


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
        log(f"data: {path}: {loaded.records} records ({loaded.format}), {len(loaded.conversations)} "
            f"conversations, {len(loaded.bad)} malformed skipped")
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


def finetune(cfg: FinetuneConfig, log=default_log) -> FinetuneResult:
    """Fine-tune cfg.init on cfg.data and save the result to cfg.out; see the module docstring."""
    t_start = time.time()
    cfg.validate()
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.precision, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    ckpt = resolve_checkpoint(cfg.init)
    out = output_dir(cfg, ckpt)
    if latest_checkpoint(out) is not None:
        raise LmforgeError(f"{out} already holds a model checkpoint; choose another out=")
    if (out / "metrics.jsonl").exists():  # an earlier fine-tune into `out` was interrupted
        log(f"{out} holds an interrupted fine-tune; starting it again")
        (out / "metrics.jsonl").unlink()
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
        log(f"overlong={cfg.overlong}: {trunc + vtrunc} conversations cut to {seq_len} tokens, "
            f"{drop + vdrop} dropped (longer than seq_len, or no assistant token left)")
    if not train_ex:
        raise LmforgeError("no training conversation is left after the overlong rule")
    log(f"split: {len(train_ex)} train / {len(val_ex)} held-out conversations")

    torch.manual_seed(cfg.seed)
    model = Transformer(mcfg).to(device)
    load_weights(model, ckpt)
    if cfg.method == "lora":
        wrapped = apply_lora(model, cfg.lora)
        log(f"lora: rank {cfg.lora.rank}, alpha {cfg.lora.alpha:g}, dropout {cfg.lora.dropout:g} on "
            f"{len(wrapped)} layers ({', '.join(cfg.lora.targets)})")
    trainable, total = count_params(model)
    if cfg.method == "lora":
        total -= trainable  # the base model's size; the adapters are what trains
    log(f"model: {total:,} parameters, {trainable:,} trainable ({100 * trainable / total:.2f}% of that), "
        f"method={cfg.method}, batching={cfg.batching}, seq_len={seq_len}, device={device}")

    def epoch_batches(epoch: int) -> list[Batch]:
        order = list(train_ex)
        random.Random(cfg.seed + epoch).shuffle(order)
        return make_batches(order, cfg.batching, seq_len, cfg.batch_size, tok.pad_id)

    val_batches = make_batches(val_ex, "pad", seq_len, cfg.batch_size, tok.pad_id) if val_ex else []
    batches = epoch_batches(0)
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * len(batches)))
    sched = TrainConfig(max_steps=total_steps, lr=cfg.lr, warmup_steps=min(cfg.warmup_steps, total_steps),
                        min_lr_ratio=cfg.min_lr_ratio)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.999),
                                  fused=device.type == "cuda")
    scaler = grad_scaler(device, dtype)
    trainable_list = [p for p in model.parameters() if p.requires_grad]

    out.mkdir(parents=True, exist_ok=True)
    (out / "finetune.yaml").write_text(to_yaml(cfg), encoding="utf-8")
    metrics = MetricsLog(out, tensorboard=False)
    val_before = validation_loss(model, val_batches, device, dtype)
    if val_before is not None:
        log(f"held-out loss before: {val_before:.4f} nats per assistant token")
    metrics.write({"step": 0, "kind": "val", "val_loss": val_before})

    progress = Progress(total_steps, 0, "auto")
    model.train()
    epoch, cursor, tokens, window_loss, window_n = 0, 0, 0, 0.0, 0
    t0 = t_log = time.perf_counter()
    tokens_at_log, val_loss = 0, val_before
    for step in range(1, total_steps + 1):
        if cursor == len(batches):
            epoch, cursor = epoch + 1, 0
            batches = epoch_batches(epoch)
        batch = batches[cursor].to(device)
        cursor += 1
        lr = lr_at(step - 1, sched)
        for g in optimizer.param_groups:
            g["lr"] = lr
        with autocast(device, dtype):
            loss = batch_loss(model, batch)
        if not torch.isfinite(loss):  # nothing is saved; the base checkpoint is untouched
            raise LmforgeError(f"the loss is {float(loss)} at step {step}; lower lr= (now {cfg.lr:g})")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        gnorm = torch.nn.utils.clip_grad_norm_(trainable_list, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        scaler.step(optimizer)
        scaler.update()
        tokens += int(batch.input_ids.numel())
        window_loss, window_n = window_loss + float(loss.detach()), window_n + 1
        if step % cfg.log_every == 0 or step == total_steps:
            now = time.perf_counter()
            rec = {"step": step, "kind": "train", "loss": window_loss / window_n, "lr": lr,
                   "grad_norm": float(gnorm), "tokens": tokens, "epoch": epoch,
                   "tokens_per_s": (tokens - tokens_at_log) / max(now - t_log, 1e-9), "elapsed": now - t0}
            metrics.write(rec)
            progress.step(step, rec, (now - t0) / step * (total_steps - step))
            train_loss, window_loss, window_n, t_log, tokens_at_log = rec["loss"], 0.0, 0, now, tokens
        if val_batches and ((cfg.eval_every and step % cfg.eval_every == 0) or step == total_steps):
            val_loss = validation_loss(model, val_batches, device, dtype)
            metrics.write({"step": step, "kind": "val", "val_loss": val_loss})
            progress.message(f"step {step}/{total_steps} | held-out loss {val_loss:.4f}")
    progress.close()
    metrics.close()
    train_s = time.perf_counter() - t0
    peak, kind = peak_memory_mb(device)

    if cfg.method == "lora":
        save_adapter(model, cfg, out)
        merge_lora(model)
    model.eval()
    saved = save_model(out, model, run_cfg, tok, total_steps, cfg)
    log(f"saved {saved} ({format_duration(train_s)} training, peak memory {peak:,.0f} MB {kind})")
    samples = sample_chats(model, tok, cfg, log)
    result = FinetuneResult(
        out_dir=str(out), method=cfg.method, steps=total_steps, epochs=total_steps / max(len(batches), 1),
        train_conversations=len(train_ex), val_conversations=len(val_ex), bad_records=n_bad,
        truncated=trunc + vtrunc, dropped=drop + vdrop, trainable_params=trainable, total_params=total,
        train_loss=train_loss, val_loss_before=val_before, val_loss=val_loss, peak_memory_mb=peak,
        memory_kind=kind, tokens_per_s=tokens / max(train_s, 1e-9), wall_s=time.time() - t_start,
        samples=samples)
    (out / "finetune.json").write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    return result


def save_adapter(model, cfg: FinetuneConfig, out: Path) -> None:
    import safetensors.torch

    (out / "lora").mkdir(exist_ok=True)
    safetensors.torch.save_file(lora_state_dict(model), str(out / "lora" / "adapter.safetensors"))
    meta = {"rank": cfg.lora.rank, "alpha": cfg.lora.alpha, "dropout": cfg.lora.dropout,
            "targets": cfg.lora.targets, "base": cfg.init}
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

    sc = SampleConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.chat_temperature, top_k=cfg.chat_top_k,
                      seed=cfg.seed)
    out = []
    if cfg.chat_prompts:
        log("chat with the fine-tuned model:")
    for prompt in cfg.chat_prompts:
        messages = ([{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else [])
        messages.append({"role": "user", "content": prompt})
        try:
            reply = chat_reply(model, tok, messages, sc)
        except LmforgeError as e:
            reply = f"(no reply: {e})"
        log(f"user: {prompt}")
        log(f"assistant: {reply}")
        out.append({"user": prompt, "assistant": reply})
    return out

