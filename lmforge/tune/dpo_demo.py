"""A synthetic preference set with a clear rule, and `lmforge run`'s optional DPO stage on it.

The rule: a reply that stops once it has answered beats the same reply followed by a stock
sign-off ("I hope this helps!"). Prompts and replies are the demo instruction set's
(lmforge/corpus/sft_demo.jsonl.gz): the chosen reply is the first sentence of its assistant
reply, the rejected one that sentence plus a sign-off drawn from SIGN_OFFS. A model has learned
the rule when it gives the chosen reply the higher reward on held-out pairs: a demo-sized model
does within a few dozen steps (tests/test_dpo.py).

The stage (off by default: `dpo.enabled=true` turns it on) tunes the SFT stage's chat model
<run>/sft into <run>/dpo and adds a "Preference tuning (DPO)" section to report.md:

    from lmforge.tune.dpo_demo import SECTION, dpo_stage, report_section
"""

from __future__ import annotations

import gzip
import json
import random
import re
from dataclasses import asdict
from pathlib import Path

from lmforge.config import RunConfig
from lmforge.train.checkpoint import latest_checkpoint
from lmforge.tune.config import DpoConfig, FinetuneConfig
from lmforge.tune.demo_data import DEMO_PATH
from lmforge.tune.prefs import PreferencePair

SECTION = "Preference tuning (DPO)"
SIGN_OFFS = [
    "I hope this helps!",
    "Let me know if you have any other questions.",
    "Feel free to ask for more.",
    "Thank you for asking!",
    "Have a great day!",
]
MAX_REPLY_CHARS = 160  # the first sentence, at most this long: pairs fit the tiny model's context whole


def first_sentence(text: str) -> str | None:
    m = re.match(r"\s*(.+?[.!?])(\s|$)", text, flags=re.DOTALL)
    if not m or len(m.group(1)) > MAX_REPLY_CHARS or "\n" in m.group(1):
        return None
    return m.group(1)


def synthetic_pairs(seed: int = 0, path: Path = DEMO_PATH) -> list[PreferencePair]:
    """One pair per demo conversation whose assistant reply opens with a short sentence."""
    rng = random.Random(seed)
    pairs = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line, text in enumerate(f, 1):
            messages = json.loads(text)["messages"]
            last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
            reply = first_sentence(messages[last]["content"])
            if reply is None:
                continue
            pairs.append(
                PreferencePair(
                    prompt=messages[:last],
                    chosen=reply,
                    rejected=f"{reply} {rng.choice(SIGN_OFFS)}",
                    line=line,
                )
            )
    return pairs


def split(pairs: list, val_fraction: float, seed: int) -> tuple[list, list]:
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(val_fraction * len(pairs)))
    return [pairs[i] for i in order[n_val:]], [pairs[i] for i in order[:n_val]]


def demo_config(cfg: RunConfig, run_dir: Path, steps: int, **overrides) -> FinetuneConfig:
    base = {
        "init": str(run_dir / "sft"),
        "data": f"synthetic: {DEMO_PATH.name}, reply vs reply + sign-off",
        "out": str(run_dir / "dpo"),
        "objective": "dpo",
        "dpo": DpoConfig(beta=0.1),
        "max_steps": steps,
        "batch_size": 8,
        "lr": 1e-4,
        "warmup_steps": 1,
        "min_lr_ratio": 0.1,
        "eval_every": 0,
        "log_every": 5,
        "overlong": "drop",
        "seed": cfg.train.seed,
        "device": cfg.train.device,
        "precision": cfg.train.precision,
        "chat_prompts": [],
        "val_fraction": 0.1,
    }
    return FinetuneConfig(**{**base, **overrides})


def dpo_stage(cfg: RunConfig, run_dir: Path, steps: int = 30, **overrides) -> dict:
    """DPO-tune <run_dir>/sft into <run_dir>/dpo on the synthetic pairs; reuses a finished one."""
    from lmforge.tune.dpo_train import dpo_finetune
    from lmforge.tune.sft import default_log

    run_dir = Path(run_dir)
    if latest_checkpoint(run_dir / "sft") is None:
        default_log(
            "skipped DPO: it tunes the SFT stage's chat model, and there is none (sft.enabled=false?)"
        )
        return {"skipped": True}
    ft = demo_config(cfg, run_dir, steps, **overrides)
    done = Path(ft.out) / "finetune.json"
    if latest_checkpoint(ft.out) is not None and done.exists():
        default_log(f"reusing the preference-tuned model in {ft.out}")
        return json.loads(done.read_text(encoding="utf-8"))
    return asdict(dpo_finetune(ft, pairs=split(synthetic_pairs(ft.seed), ft.val_fraction, ft.seed)))


def report_section(result: dict) -> str:
    if not result or result.get("skipped"):
        return ""
    b, a = result.get("val_before") or {}, result.get("val_after") or {}
    lines = [
        (
            f"DPO ({result['loss']}, beta {result['beta']:g}) of the chat model on "
            f"{result['train_pairs']} synthetic "
            "pairs (a reply beats the same reply plus a stock sign-off), "
            f"{result['steps']} steps; the tuned model is in `{result['out_dir']}`."
        ),
        "",
        "| metric | before | after |",
        "|---|---|---|",
    ]
    if a:
        lines += [
            (
                f"| held-out preference accuracy ({result['val_pairs']} pairs) "
                f"| {b.get('pref_accuracy', 0):.3f} "
                f"| {a['pref_accuracy']:.3f} |"
            ),
            (
                f"| log p(chosen) > log p(rejected) | {b.get('logp_accuracy', 0):.3f} "
                f"| {a['logp_accuracy']:.3f} |"
            ),
            f"| DPO loss | {b.get('loss', 0):.4f} | {a['loss']:.4f} |",
        ]
    lines += ["", f"Time: {result['wall_s']:.1f} s.", ""]
    return "\n".join(lines)
