"""Model compute of `lmforge eval` vs lm-evaluation-harness on seven task shapes, same model, one thread.

Shapes: PIQA-like (short question, two long answers of varying length), the same with the second
answer a one-word edit of the first (continuations sharing a long prefix), BoolQ-like (long passage,
answers "no"/"yes") and MMLU-like 5-shot (lm-eval's mmlu template: a description, then the first 5
documents of a dev split as examples, the same for every document), all as lm-eval's own task
files over synthetic local data and run by lmforge through `--include-path` (lmeval_yaml.py);
ARC-Easy, HellaSwag and one MMLU subject (0-shot) from the benchmark files
(`lmforge.eval.parity.write_lm_eval_tasks`). One random GPT-2 (transformers)
serves both: lm-eval's `HFLM` wraps the same model object; its `_model_call` (every forward pass)
and its log-softmax over the batch's logits are timed; lmforge's time is the engine's model time
(forward passes, output layer and log-softmax of the scored positions). Times are CPU seconds of
the (single) torch thread, `time.thread_time`, which other jobs on the machine barely disturb;
wall-clock ratios are shown too. Each side runs `--repeats` times, interleaved; medians.
Positions: token positions through the model, padded and real (lmforge); lm-eval's padded count is
the size of every batch it runs.

    python bench/eval_shapes.py --docs 100 --repeats 3 --profile --engine-paths
    # GPT-2 small's shape:
    python bench/eval_shapes.py --docs 30 --layers 12 --embd 768 --heads 12 --vocab 50257
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from lmforge.eval import evaluate, get_tasks
from lmforge.eval.lm import HFCausalLM
from lmforge.eval.parity import lm_eval_dir, run_lm_eval, write_lm_eval_tasks
from lmforge.eval.tasks.data import default_data_dir
from lmforge.eval.tasks.lmeval_yaml import TaskFolder
from lmforge.tiny import hf_tokenizer, tiny_tokenizer

WORDS = [
    "the",
    "cat",
    "dog",
    "sat",
    "on",
    "a",
    "mat",
    "and",
    "ran",
    "to",
    "house",
    "tree",
    "red",
    "blue",
    "big",
    "small",
    "it",
    "was",
    "there",
    "when",
    "you",
    "see",
    "water",
    "fire",
    "stone",
    "who",
    "what",
    "why",
    "because",
    "people",
    "time",
    "year",
    "way",
    "day",
    "thing",
    "man",
    "world",
    "life",
    "hand",
    "part",
    "child",
]


def _edit(rnd, words: str) -> str:
    """`words` with one word replaced near the end: two solutions sharing a long prefix."""
    w = words.split()
    k = rnd.randrange(max(0, len(w) - 3), len(w))
    w[k] = rnd.choice([x for x in WORDS if x != w[k]])
    return " ".join(w)


def synthetic(root: Path, docs: int) -> None:
    """lm-eval's piqa.yaml, boolq default.yaml and mmlu _default_template_yaml (5-shot, its first_n
    few-shot sampler over a 5-document dev split: every document starts with the same examples),
    pointed at synthetic local documents. `piqa_edit` is piqa.yaml whose second solution is the
    first with one of its last three words replaced: continuations sharing a long prefix."""
    rnd = random.Random(0)
    s = lambda n: " ".join(rnd.choice(WORDS) for _ in range(n))

    def piqa_edit():
        sol = s(rnd.randint(3, 60))
        return {
            "goal": s(rnd.randint(5, 20)),
            "sol1": sol,
            "sol2": _edit(rnd, sol),
            "label": rnd.randint(0, 1),
        }

    rows = {
        "piqa": lambda: {
            "goal": s(rnd.randint(5, 20)),
            "sol1": s(rnd.randint(3, 60)),
            "sol2": s(rnd.randint(3, 60)),
            "label": rnd.randint(0, 1),
        },
        "piqa_edit": piqa_edit,
        "boolq": lambda: {
            "passage": s(rnd.randint(80, 160)),
            "question": s(rnd.randint(5, 10)),
            "label": rnd.randint(0, 1),
        },
        "mmlu5": lambda: {
            "question": s(rnd.randint(10, 40)) + "?",
            "choices": [s(rnd.randint(1, 6)) for _ in range(4)],
            "answer": rnd.randint(0, 3),
        },
    }
    sources = {  # piqa and boolq first: their documents are those of earlier runs
        "piqa": "piqa/piqa.yaml",
        "boolq": "super_glue/boolq/default.yaml",
        "piqa_edit": "piqa/piqa.yaml",
        "mmlu5": "mmlu/default/_default_template_yaml",
    }
    for task, rel in sources.items():
        data = root / f"{task}.jsonl"
        data.write_text("".join(json.dumps(rows[task]()) + "\n" for _ in range(docs)))
        lines = [
            ln
            for ln in (lm_eval_dir() / rel).read_text().splitlines()
            if not ln.startswith(("dataset_", "tag:", "  - super", "task:"))
        ]
        splits = f"    validation: {data}\n    train: {data}\n"
        if task == "mmlu5":
            dev = root / "mmlu5_dev.jsonl"
            dev.write_text("".join(json.dumps(rows[task]()) + "\n" for _ in range(5)))
            splits = f"    test: {data}\n    dev: {dev}\n"
            about = "The following are multiple choice questions (with answers) about things."
            lines.append(f'description: "{about}\\n\\n"')
        (root / f"{task}.yaml").write_text(
            "\n".join(lines) + f"\ntask: {task}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n{splits}"
        )


def random_gpt2(args) -> HFCausalLM:
    """A random GPT-2 of the given shape over a 4096-token BPE trained on the demo corpus; a larger
    --vocab pads the embedding and output layer as a real vocabulary would size them."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = tiny_tokenizer(4096)
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=max(args.vocab, tok.vocab_size),
        n_positions=1024,
        n_embd=args.embd,
        n_layer=args.layers,
        n_head=args.heads,
        initializer_range=0.1,
        bos_token_id=tok.eot_id,
        eos_token_id=tok.eot_id,
        pad_token_id=tok.pad_id,
    )
    return HFCausalLM(GPT2LMHeadModel(cfg).eval(), hf_tokenizer(tok), name=f"gpt2-{args.layers}x{args.embd}")


SYNTHETIC = ("piqa", "boolq", "piqa_edit", "mmlu5")  # task files written by `synthetic`
FEWSHOT = {"mmlu5": 5}
MATMUL = {"aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm"}


def profile_lmforge(lm, shapes, args) -> None:
    """Where lmforge's operator time goes (torch.profiler, one run per shape): matrix multiplies
    (the irreducible part at a given number of positions, in fp32), attention, everything else."""
    from torch.profiler import ProfilerActivity, profile

    print("\n| shape | matmul | attention | other ops (element-wise, norms, copies, masks) |")
    print("|---|---:|---:|---:|")
    for label, name, tasks in shapes:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            evaluate(
                lm,
                tasks,
                num_fewshot=FEWSHOT.get(name, 0),
                limit=args.docs,
                batch_size=args.batch_size,
                progress=False,
            )
        ev = [e for e in prof.key_averages() if e.key.startswith("aten::")]
        total = sum(e.self_cpu_time_total for e in ev)
        mm = sum(e.self_cpu_time_total for e in ev if e.key in MATMUL)
        att = sum(e.self_cpu_time_total for e in ev if "scaled_dot_product" in e.key)
        print(
            f"| {label} | {mm / total:.0%} | {att / total:.0%} | {(total - mm - att) / total:.0%} |",
            flush=True,
        )


def engine_paths(shapes, args) -> None:
    """lmforge's own model of the same shape through the engine's three ways: whole requests, the
    KV-cache path, token-trie rows (CPU seconds, best of --repeats; padded positions)."""
    from lmforge.eval.lm import LmforgeLM
    from lmforge.model import ModelConfig, Transformer

    tok = tiny_tokenizer(4096)
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=max(args.vocab, tok.vocab_size),
        block_size=1024,
        n_layer=args.layers,
        n_head=args.heads,
        n_embd=args.embd,
    )
    lm = LmforgeLM(Transformer(cfg), tok)
    print("\n| shape | whole | KV cache | trie rows | trie rows vs KV cache |")
    print("|---|---:|---:|---:|---:|")
    for label, name, tasks in shapes:
        best, pos = {}, {}
        for _ in range(args.repeats):
            for mode in ("whole", "kv", "packed"):
                lm._packs = None if mode == "packed" else False  # False: as if the model took no mask
                r = evaluate(
                    lm,
                    tasks,
                    num_fewshot=FEWSHOT.get(name, 0),
                    limit=args.docs,
                    batch_size=args.batch_size,
                    progress=False,
                    share_prefix=mode != "whole",
                )["tasks"][tasks[0].name]
                best[mode] = min(best.get(mode, float("inf")), r["model_cpu_seconds"])
                pos[mode] = r["positions"]["padded"]
        cells = " | ".join(f"{best[m]:.2f} ({pos[m]})" for m in ("whole", "kv", "packed"))
        print(f"| {label} | {cells} | {best['kv'] / best['packed']:.2f}× |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--embd", type=int, default=256)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument(
        "--vocab",
        type=int,
        default=4096,
        help="rows of the output layer (GPT-2: 50257); the tokenizer uses the first 4096",
    )
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--subject", default="high_school_psychology")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each side, interleaved; medians")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="then profile one lmforge run per shape (torch.profiler): where its time goes",
    )
    ap.add_argument(
        "--engine-paths",
        action="store_true",
        help="then lmforge's own model of the same shape: whole requests vs KV cache vs token-trie rows",
    )
    ap.add_argument(
        "--shapes",
        default="piqa,boolq,arc,hellaswag,mmlu,piqa_edit,mmlu5",
        help="comma-separated subset of piqa, boolq, arc, hellaswag, mmlu, piqa_edit, mmlu5",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    from lm_eval.models.huggingface import HFLM

    tmp = Path(tempfile.mkdtemp(prefix="eval_shapes_"))
    lm = random_gpt2(args)
    synthetic(tmp, args.docs)
    names = write_lm_eval_tasks(tmp / "bench", default_data_dir(), [args.subject])
    folder = TaskFolder([tmp])
    shapes = [
        ("PIQA-like", "piqa", folder.get("piqa")),
        ("BoolQ-like", "boolq", folder.get("boolq")),
        ("ARC-Easy", names["arc_easy"], get_tasks("arc_easy")),
        ("HellaSwag", names["hellaswag"], get_tasks("hellaswag")),
        (f"MMLU {args.subject}", names[f"mmlu_{args.subject}"], get_tasks(f"mmlu_{args.subject}")),
        ("PIQA-like, choices sharing a prefix", "piqa_edit", folder.get("piqa_edit")),
        ("MMLU-like 5-shot (first_n)", "mmlu5", folder.get("mmlu5")),
    ]
    keys = ["piqa", "boolq", "arc", "hellaswag", "mmlu", "piqa_edit", "mmlu5"]
    wanted = args.shapes.split(",")
    shapes = [s for k, s in zip(keys, shapes) if k in wanted]
    hflm = HFLM(pretrained=lm.model, tokenizer=lm.tok, batch_size=args.batch_size, max_length=1024)
    clock = {"forward": 0.0, "softmax": 0.0, "forward_cpu": 0.0, "softmax_cpu": 0.0, "positions": 0}

    def timer(fn, key):
        def run(*a, **kw):
            t0, c0 = time.perf_counter(), time.thread_time()
            out = fn(*a, **kw)
            clock[f"{key}_cpu"] += time.thread_time() - c0
            clock[key] += time.perf_counter() - t0
            return out

        return run

    inner = timer(hflm._model_call, "forward")

    def model_call(inps, *a, **kw):
        clock["positions"] += inps.numel()
        return inner(inps, *a, **kw)

    hflm._model_call = model_call
    # lm-eval's log-softmax over every position of the batch runs outside `_model_call`; lmforge's
    # model_seconds include its own log-softmax, so lm-eval's is timed too (a stand-in for the
    # `torch.nn.functional` module that lm-eval's huggingface.py calls as `F`).
    hf_module = importlib.import_module("lm_eval.models.huggingface")
    hf_module.F = SimpleNamespace(
        **{**vars(torch.nn.functional), "log_softmax": timer(torch.nn.functional.log_softmax, "softmax")}
    )
    print(
        "| shape | docs | lm-eval CPU s (forward + log-softmax) | lmforge CPU s "
        "| speed-up CPU (forward only) "
        "| speed-up wall | lm-eval positions | lmforge positions (padded / real) | padding ratio | same acc |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for label, theirs_name, tasks in shapes:
        include = tmp if theirs_name in SYNTHETIC else tmp / "bench"
        runs = []
        for _ in range(args.repeats):  # interleaved, medians: the machine's load drifts
            clock.update(forward=0.0, softmax=0.0, forward_cpu=0.0, softmax_cpu=0.0, positions=0)
            shots = FEWSHOT.get(theirs_name, 0)
            theirs = run_lm_eval(hflm, [theirs_name], include, shots, args.docs, args.batch_size)
            ours = evaluate(
                lm, tasks, num_fewshot=shots, limit=args.docs, batch_size=args.batch_size, progress=False
            )
            r = ours["tasks"][tasks[0].name]
            runs.append(
                (
                    clock["forward_cpu"] + clock["softmax_cpu"],
                    clock["forward_cpu"],
                    r["model_cpu_seconds"],
                    clock["forward"] + clock["softmax"],
                    r["model_seconds"],
                )
            )
        same = round(r["metrics"]["acc"], 4) == round(float(theirs["results"][theirs_name]["acc,none"]), 4)
        pos = r["positions"]
        full, fwd, mine, full_wall, mine_wall = (statistics.median(x) for x in zip(*runs))
        print(
            f"| {label} | {r['n']} | {full:.2f} | {mine:.2f} | {full / mine:.2f}× ({fwd / mine:.2f}×) | "
            f"{full_wall / mine_wall:.2f}× | {clock['positions']} | {pos['padded']} / {pos['real']} | "
            f"{pos['padded'] / pos['real']:.3f} | {same} |",
            flush=True,
        )
    if args.profile:
        profile_lmforge(lm, shapes, args)
    if args.engine_paths:
        engine_paths(shapes, args)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
