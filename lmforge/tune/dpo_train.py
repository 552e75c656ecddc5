"""`lmforge finetune --method dpo`: preference pairs in, a preference-tuned chat model out.

    pairs --chat template--> (prompt+chosen, prompt+rejected) rows --DpoSource--> training loop
    base checkpoint --(LoRA adapters)--> DPO on train/loop.py `train_on` --(merge)--> <out>/checkpoints

The run is SFT's (tune/sft.py) with another batch source and objective (tune/dpo_source.py,
tune/dpo.py): the same loop (resume from <out>/train, grad_accum, torchrun, SIGTERM saves), the
same output run directory. Held-out pairs (val_fraction of the pairs, or val_data) are scored
before training and at every validation: DPO loss, preference accuracy (chosen reward > rejected
reward), reward margin, and how often the model gives the chosen reply the higher log-prob; the
before/after figures go to <out>/finetune.json.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from lmforge.config import read_config, to_yaml
from lmforge.errors import LmforgeError
from lmforge.model import Transformer
from lmforge.train.checkpoint import latest_checkpoint, load_weights, resolve_checkpoint
from lmforge.train.loop import Inputs, train_on
from lmforge.train.metrics import format_duration
from lmforge.train.parallel.launch import is_main_process
from lmforge.train.precision import autocast, resolve_device, resolve_dtype
from lmforge.tune.config import FinetuneConfig
from lmforge.tune.dpo_source import (
    DpoObjective,
    DpoSource,
    adapters_off_reference,
    dpo_validator,
    encode_pairs,
    fingerprint,
    frozen_reference,
    load_or_compute_table,
    preference_figures,
    reference_table,
    table_reference,
)
from lmforge.tune.lora import apply_lora, count_params, merge_lora
from lmforge.tune.prefs import read_preferences
from lmforge.tune.sft import (
    MAX_REPORTED,
    TRAIN_DIR,
    default_log,
    find_tokenizer,
    full_state_dict,
    peak_memory_mb,
    sample_chats,
    save_adapter,
    save_model,
    train_config,
)

REF_FILE = "ref_logps.pt"  # <out>/train: precomputed reference log-probs (train and held-out pairs)
BEFORE_FILE = "pref_before.json"  # <out>/train: the held-out figures of the starting model


@dataclass
class DpoResult:
    out_dir: str
    method: str  # full or lora
    steps: int
    epochs: float
    train_pairs: int
    val_pairs: int
    bad_records: int
    truncated: int
    dropped: int
    trainable_params: int
    total_params: int
    train_loss: float | None
    val_before: dict | None  # held-out figures of the starting model (loss, pref_accuracy, ...)
    val_after: dict | None  # ... and of the tuned one
    peak_memory_mb: float
    memory_kind: str
    steps_per_s: float  # optimizer steps per second of training (validation and checkpoints excluded)
    wall_s: float
    objective: str = "dpo"
    beta: float = 0.1
    loss: str = "sigmoid"
    ref: str = "model"
    samples: list[dict] = field(default_factory=list)
    stopped: str | None = None


def load_pairs(cfg: FinetuneConfig, log) -> tuple[list, list, int]:
    """(train pairs, held-out pairs, malformed records) from cfg.data (and cfg.val_data)."""
    on_error = "fatal" if cfg.on_bad_record == "error" else "skip"

    def load(path: str):
        data = read_preferences(path, on_error=on_error)
        for b in data.bad[:MAX_REPORTED]:
            log(f"skipped malformed record {b}")
        if len(data.bad) > MAX_REPORTED:
            log(f"... and {len(data.bad) - MAX_REPORTED} more malformed records")
        formats = ", ".join(f"{n} {f}" for f, n in sorted(data.formats.items()))
        excluded = ", ".join(f"{n} {why}" for why, n in sorted(data.excluded.items()))
        log(
            f"data: {path}: {len(data.pairs)} preference pairs ({formats or 'none'}), "
            f"{len(data.bad)} malformed "
            f"skipped" + (f", left out: {excluded}" if excluded else "")
        )
        return list(data.pairs), len(data.bad)

    pairs, bad = load(cfg.data)
    if cfg.val_data:
        val, vbad = load(cfg.val_data)
        return pairs, val, bad + vbad
    order = list(range(len(pairs)))
    random.Random(cfg.seed).shuffle(order)
    n_val = round(cfg.val_fraction * len(pairs))
    if cfg.val_fraction > 0 and len(pairs) >= 2:
        n_val = min(max(n_val, 1), len(pairs) - 1)
    return [pairs[i] for i in sorted(order[n_val:])], [pairs[i] for i in sorted(order[:n_val])], bad


def output_dir(cfg: FinetuneConfig, ckpt: Path) -> Path:
    if cfg.out:
        return Path(cfg.out)
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt
    return run_dir.with_name(run_dir.name + "-dpo")


def dpo_finetune(cfg: FinetuneConfig, log=default_log, pairs: tuple[list, list] | None = None) -> DpoResult:
    """DPO-tune cfg.init on the preference pairs of cfg.data (or `pairs` = (train, held-out)
    PreferencePair lists given directly) and save the result to cfg.out."""
    t_start = time.time()
    cfg.validate()
    main = is_main_process()
    log = log if main else (lambda msg: None)
    ckpt = resolve_checkpoint(cfg.init)
    out = output_dir(cfg, ckpt)
    if latest_checkpoint(out) is not None:
        raise LmforgeError(f"{out} already holds a model checkpoint; choose another out=")
    settings = to_yaml(cfg)
    resuming = (out / "finetune.yaml").exists() and latest_checkpoint(out / TRAIN_DIR) is not None
    if resuming:
        if (out / "finetune.yaml").read_text(encoding="utf-8") != settings:
            raise LmforgeError(
                f"{out} holds an interrupted fine-tune with other settings ({out / 'finetune.yaml'}); "
                "run it with the same settings to resume, or choose another out="
            )
        log(f"resuming the interrupted DPO run in {out}")
    run_cfg = read_config(ckpt)
    mcfg = run_cfg.model
    if mcfg.kind != "decoder":
        raise LmforgeError(f"DPO tunes decoder (chat) models; {ckpt} is a {mcfg.kind}")
    tok = find_tokenizer(Path(cfg.init), ckpt)
    seq_len = cfg.seq_len or mcfg.block_size
    if seq_len > mcfg.block_size:
        raise LmforgeError(f"seq_len={seq_len} is longer than the model's block_size={mcfg.block_size}")

    train_raw, val_raw, n_bad = (*pairs, 0) if pairs is not None else load_pairs(cfg, log)
    train_p, trunc, drop = encode_pairs(train_raw, tok, seq_len, cfg.overlong)
    val_p, vtrunc, vdrop = encode_pairs(val_raw, tok, seq_len, cfg.overlong)
    if trunc + drop + vtrunc + vdrop:
        log(
            f"overlong={cfg.overlong}: {trunc + vtrunc} pairs cut to {seq_len} tokens, {drop + vdrop} dropped"
        )
    if not train_p:
        raise LmforgeError("no training preference pair is left after the overlong rule")
    log(f"split: {len(train_p)} train / {len(val_p)} held-out pairs")

    pairs_per_step = cfg.batch_size * cfg.grad_accum
    steps_per_epoch = math.ceil(len(train_p) / pairs_per_step)
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * steps_per_epoch))
    train_cfg = train_config(cfg, run_cfg, out, ckpt, seq_len, total_steps)
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    amp = lambda: autocast(device, resolve_dtype(cfg.precision, device))
    dc = cfg.dpo
    tables: dict[str, torch.Tensor] = {}
    refs: dict[str, object] = {}
    counts: dict[str, int] = {}
    final: dict[str, object] = {}

    def base_model() -> torch.nn.Module:
        m = Transformer(mcfg).to(device)
        load_weights(m, ckpt)
        return m

    def prepare_model(model: torch.nn.Module) -> None:
        """Before LoRA: the starting weights give the reference (copy, table) and the 'before' figures.
        A resumed run's model is not the start yet (its checkpoint is loaded later): it reloads them."""
        held: list[torch.nn.Module] = []

        def start() -> torch.nn.Module:  # built only when needed: a resumed LoRA run may need none
            if not held:
                held.append(base_model() if resuming else model)
            return held[0]

        key = f"{fingerprint(train_p)}:{fingerprint(val_p)}:{dc.ref}"
        need_train = dc.ref == "precomputed" and cfg.method == "full"

        def compute() -> torch.Tensor:
            parts = [
                reference_table(start(), ps, tok.pad_id, amp)
                for ps in ((train_p if need_train else []), val_p)
            ]
            return torch.cat(parts)

        table = load_or_compute_table(out / TRAIN_DIR / REF_FILE, key, compute, save=main)
        n_train = len(train_p) if need_train else 0
        tables["train"], tables["val"] = table[:n_train], table[n_train:]
        if cfg.method == "full" and dc.ref == "model":
            refs["ref"] = frozen_reference(start() if resuming else base_model())
        if main and val_p and not (out / TRAIN_DIR / BEFORE_FILE).exists():
            probe = DpoObjective(table_reference(tables["val"]), dc.beta, dc.loss, dc.label_smoothing)
            before = preference_figures(start(), val_p, tables["val"], probe, tok.pad_id, cfg.batch_size, amp)
            (out / TRAIN_DIR / BEFORE_FILE).write_text(json.dumps(before) + "\n", encoding="utf-8")
        if cfg.method == "lora":
            wrapped = apply_lora(model, cfg.lora)
            log(
                f"lora: rank {cfg.lora.rank}, alpha {cfg.lora.alpha:g} on {len(wrapped)} layers; "
                "reference = the base with adapters off"
            )
        trainable, total = count_params(model)
        if cfg.method == "lora":
            total -= trainable
        counts.update(trainable=trainable, total=total)
        log(
            f"model: {total:,} parameters, {trainable:,} trainable, DPO {dc.loss} beta={dc.beta:g}"
            f"{f' label_smoothing={dc.label_smoothing:g}' if dc.label_smoothing else ''}, reference: "
            f"{'base with adapters off' if cfg.method == 'lora' else dc.ref}, {total_steps} steps"
        )

    def objective() -> DpoObjective:
        if cfg.method == "lora":
            ref = adapters_off_reference()
        elif dc.ref == "precomputed":
            ref = table_reference(tables["train"])
        else:
            ref = refs["ref"]
        return DpoObjective(ref, dc.beta, dc.loss, dc.label_smoothing)

    def on_complete(par) -> None:
        final["state" if par.env.distributed else "model"] = (
            full_state_dict(par.module) if par.env.distributed else par.module
        )

    inputs = Inputs(
        check=lambda seq_len, env: None,
        source=lambda seq_len, env: DpoSource(
            train_p, objective(), tok.pad_id, cfg.seed, env.dp_rank, env.layout.dp
        ),
        validator=lambda seq_len, is_main: dpo_validator(
            val_p, tables["val"], objective(), tok.pad_id, cfg.batch_size
        ),
        prepare_model=prepare_model,
        on_complete=on_complete,
    )
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "finetune.yaml").write_text(settings, encoding="utf-8")
    tr = train_on(train_cfg, inputs, tok, out / TRAIN_DIR)
    refs.clear()  # the frozen copy is no longer needed
    if tr.diverged:
        raise LmforgeError(f"{tr.stop_reason}; lower lr= (now {cfg.lr:g})")
    peak, kind = peak_memory_mb(device)
    before_file = out / TRAIN_DIR / BEFORE_FILE
    result = DpoResult(
        out_dir=str(out),
        method=cfg.method,
        steps=tr.steps,
        epochs=tr.steps / steps_per_epoch,
        train_pairs=len(train_p),
        val_pairs=len(val_p),
        bad_records=n_bad,
        truncated=trunc + vtrunc,
        dropped=drop + vdrop,
        trainable_params=counts.get("trainable", 0),
        total_params=counts.get("total", 0),
        train_loss=tr.final_train_loss,
        val_before=json.loads(before_file.read_text(encoding="utf-8")) if before_file.exists() else None,
        val_after=last_val(out / TRAIN_DIR / "metrics.jsonl"),
        peak_memory_mb=peak,
        memory_kind=kind,
        steps_per_s=tr.tokens_per_s / (pairs_per_step * seq_len),
        wall_s=time.time() - t_start,
        beta=dc.beta,
        loss=dc.loss,
        ref="adapters off" if cfg.method == "lora" else dc.ref,
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
    shutil.copyfile(out / TRAIN_DIR / "metrics.jsonl", out / "metrics.jsonl")
    shutil.rmtree(out / TRAIN_DIR / "checkpoints", ignore_errors=True)
    log(f"saved {saved} ({format_duration(tr.wall_s)} training, peak memory {peak:,.0f} MB {kind})")
    if result.val_before and result.val_after:
        log(held_out_line(result.val_before, result.val_after, len(val_p)))
    result.samples = sample_chats(model, tok, cfg, log)
    result.wall_s = time.time() - t_start
    (out / "finetune.json").write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    return result


def last_val(metrics: Path) -> dict | None:
    """The last held-out record of the run's metrics.jsonl, as preference figures."""
    if not metrics.is_file():
        return None
    rows = [json.loads(x) for x in metrics.read_text(encoding="utf-8").splitlines() if x.strip()]
    vals = [r for r in rows if r.get("kind") == "val"]
    if not vals:
        return None
    v = vals[-1]
    return {
        "loss": v["val_loss"],
        **{k[4:]: v[k] for k in ("val_pref_accuracy", "val_reward_margin", "val_logp_accuracy") if k in v},
    }


def held_out_line(before: dict, after: dict, n: int) -> str:
    return (
        f"held-out preference accuracy (chosen reward > rejected, {n} pairs): "
        f"{before['pref_accuracy']:.3f} -> "
        f"{after['pref_accuracy']:.3f}; log p(chosen) > log p(rejected): {before['logp_accuracy']:.3f} -> "
        f"{after['logp_accuracy']:.3f}; DPO loss {before['loss']:.4f} -> {after['loss']:.4f}"
    )
