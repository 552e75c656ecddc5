"""`lmforge eval`: benchmarks, perplexity, custom tasks, comparisons and an LLM judge.

    lmforge eval --run runs/x --tasks arc_easy,arc_challenge,hellaswag,mmlu,truthfulqa_mc2,wikitext
    lmforge eval --run runs/x --tasks mmlu --num-fewshot 5
    lmforge eval --run runs/x --task-file my_task.yaml
    lmforge eval --run runs/x --include-path my_lm_eval_tasks/ --tasks winogrande   # lm-eval's YAML
    lmforge eval --run runs/x --text-file notes.txt          # perplexity of any text
    lmforge eval --hf-model path/to/hf_folder --tasks arc_easy --output out/
    lmforge eval compare runs/a runs/b
    lmforge eval judge --answers a.jsonl [--answers-b b.jsonl] --output judge/   (see judge.py)

Wiring (lmforge/cli.py): `add_parser(subparsers, extra_actions)` and `run(args) -> int`; user errors
raise LmforgeError. `eval human` lives in lmforge.serve (its ratings are collected by the server's
page): cli.py passes it in as an extra action, so this package imports nothing of serve's CLI.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from lmforge.errors import LmforgeError


def add_parser(
    subparsers, extra_actions: Sequence[tuple[str, Callable, Callable]] = ()
) -> argparse.ArgumentParser:
    """The `eval` parser. extra_actions: (name, add_parser(action_subparsers), run(args)) for actions
    a package above eval provides (`eval human`, from lmforge.serve)."""
    p = subparsers.add_parser(
        "eval",
        help="evaluate a model: benchmarks, perplexity, custom tasks, LLM judge",
        description="Evaluate a model on benchmarks (lm-evaluation-harness semantics), "
        "perplexity, YAML tasks; compare runs; grade answers with an LLM judge.",
    )
    add_eval_args(p)
    sub = p.add_subparsers(dest="eval_action", metavar="action")
    c = sub.add_parser("compare", help="compare the eval results of two runs (or results.json files)")
    c.add_argument("a", help="run directory, eval folder or results.json")
    c.add_argument("b", help="run directory, eval folder or results.json")
    from lmforge.eval.judge import add_judge_parser

    add_judge_parser(sub)
    for name, add_action, run_action in extra_actions:
        add_action(sub)
        sub.choices[name].set_defaults(eval_run=run_action)
    return p


def add_eval_args(p: argparse.ArgumentParser) -> None:
    m = p.add_argument_group("model")
    m.add_argument("--run", help="lmforge run directory (latest checkpoint) or a checkpoint directory")
    m.add_argument("--hf-model", help="a Hugging Face causal LM folder or hub id (needs transformers)")
    m.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps (default cpu)")
    t = p.add_argument_group("tasks")
    t.add_argument(
        "--tasks",
        default="",
        help="comma-separated: arc_easy, arc_challenge, hellaswag, mmlu, "
        "mmlu_<category|subject>, truthfulqa_mc1, truthfulqa_mc2, truthfulqa_gen, wikitext",
    )
    t.add_argument("--task-file", action="append", default=[], help="a YAML task file (repeatable)")
    t.add_argument(
        "--include-path",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder of lm-evaluation-harness task YAMLs (repeatable): --tasks may then name its "
        "tasks, groups and tags; their `!function` Python files are run, as lm-eval does",
    )
    t.add_argument(
        "--text-file", action="append", default=[], help="perplexity of a .txt/.jsonl file or folder"
    )
    t.add_argument("--shards", help="perplexity / bits per byte of a token shard folder (meta.json)")
    t.add_argument("--shard-split", default="val", help="split of --shards (default val)")
    t.add_argument("--num-fewshot", type=int, default=None, help="examples per prompt (default: the task's)")
    t.add_argument("--limit", type=int, default=None, help="only the first N documents of each task")
    t.add_argument("--seed", type=int, default=1234, help="few-shot sampling seed (lm-eval's default 1234)")
    t.add_argument("--system-prompt", default=None, help="text put before every prompt (instruction models)")
    t.add_argument(
        "--prompt-template",
        metavar="FILE",
        default=None,
        help="YAML/JSON prompt template: its system prompt (and instructions) become the system "
        "prompt of every task (its query/answer/shots are not used: tasks have their own)",
    )
    t.add_argument(
        "--apply-chat-template",
        action="store_true",
        help="render each context in the chat template (system message, one user turn with the "
        "few-shot examples and the question, then <|assistant|>), as lm-eval's "
        "--apply_chat_template without --fewshot_as_multiturn; lmforge runs only",
    )
    d = p.add_argument_group("data and output")
    d.add_argument(
        "--data-dir",
        default=None,
        help="benchmark folder (default: $LMFORGE_EVAL_DATA, else the "
        "few-hundred-item subsets shipped with lmforge, lmforge/benchmarks/)",
    )
    d.add_argument(
        "--hub",
        action="store_true",
        help="load the full datasets from the Hugging Face hub "
        "(needs `datasets`, in the eval extra, and a network, or $LMFORGE_HUB_MIRROR)",
    )
    d.add_argument(
        "--output",
        default=None,
        help="where results go (default: <run>/eval); results.json "
        "keeps the tasks of earlier evaluations of the same model",
    )
    d.add_argument("--log-samples", action="store_true", help="also write per-example predictions")
    d.add_argument("--no-cache", action="store_true", help="do not reuse or store per-request results")
    e = p.add_argument_group("engine")
    e.add_argument(
        "--batch-size", type=int, default=16, help="rows per forward pass (scores do not depend on it)"
    )
    e.add_argument(
        "--no-prefix-sharing",
        action="store_true",
        help="score every choice with its full context "
        "(as lm-eval does) instead of reusing the context's KV cache",
    )


def load_lm(args):
    from lmforge.eval.lm import HFCausalLM, LmforgeLM

    if bool(args.run) == bool(args.hf_model):
        raise LmforgeError("give exactly one model: --run RUN_DIR or --hf-model PATH")
    if args.run:
        if not Path(args.run).exists():
            raise LmforgeError(f"run directory not found: {args.run}")
        return LmforgeLM.from_run(args.run, device=args.device)
    return HFCausalLM.from_pretrained(args.hf_model, device=args.device)


def collect_tasks(args) -> list:
    from lmforge.eval.tasks import get_tasks
    from lmforge.eval.tasks.custom import load_task_file

    folder = None
    if getattr(args, "include_path", None):
        from lmforge.eval.tasks.lmeval_yaml import TaskFolder

        folder = TaskFolder(args.include_path)
    tasks = []
    for name in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        tasks += (
            folder.get(name)
            if folder is not None and name in folder
            else get_tasks(name, args.data_dir, args.hub)
        )
    tasks += [load_task_file(f) for f in args.task_file]
    return tasks


def run(args) -> int:
    if getattr(args, "eval_action", None) == "compare":
        return run_compare(args)
    if getattr(args, "eval_action", None) == "judge":
        from lmforge.eval.judge import run_judge

        return run_judge(args)
    if getattr(args, "eval_run", None) is not None:
        return args.eval_run(args)
    return run_eval(args)


def run_eval(args) -> int:
    from lmforge.eval.cache import ResultCache
    from lmforge.eval.results import summary_rows, text_table, write_results
    from lmforge.eval.runner import evaluate

    if args.batch_size < 1:
        raise LmforgeError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise LmforgeError(f"--limit must be >= 1, got {args.limit}")
    if args.num_fewshot is not None and args.num_fewshot < 0:
        raise LmforgeError(f"--num-fewshot must be >= 0, got {args.num_fewshot}")
    system_prompt = args.system_prompt
    if getattr(args, "prompt_template", None):
        from lmforge.chat.prompts import load_template, template_system

        if system_prompt is not None:
            raise LmforgeError("give --system-prompt or --prompt-template, not both")
        system_prompt = template_system(load_template(args.prompt_template))
    tasks = collect_tasks(args)
    if not tasks and not args.text_file and not args.shards:
        raise LmforgeError("nothing to evaluate: give --tasks, --task-file, --text-file or --shards")
    out = Path(args.output) if args.output else (Path(args.run) / "eval" if args.run else None)
    if out is None:
        raise LmforgeError("--output is required with --hf-model")
    lm = load_lm(args)
    cache = None if args.no_cache else ResultCache(out / "cache.sqlite")
    try:
        results = evaluate(
            lm,
            tasks,
            num_fewshot=args.num_fewshot,
            limit=args.limit,
            batch_size=args.batch_size,
            seed=args.seed,
            system_prompt=system_prompt,
            cache=cache,
            apply_chat_template=getattr(args, "apply_chat_template", False),
            share_prefix=not args.no_prefix_sharing,
            log_samples=args.log_samples,
        )
    finally:
        if cache is not None:
            cache.close()
    _add_text_perplexity(lm, args, results)
    results["notes"] = subset_notes(tasks)
    jp, mp = write_results(results, out)
    print(text_table(summary_rows(results)))
    for note in results["notes"]:
        print(f"note: {note}")
    if results["errors"]:
        print(f"{len(results['errors'])} task(s) failed: {', '.join(results['errors'])}", file=sys.stderr)
    print(f"results: {jp}  {mp}")
    return 1 if results["errors"] else 0  # the others' results are written all the same


def subset_notes(tasks) -> list[str]:
    """A line for the output when some benchmark was scored on the subsets shipped with lmforge."""
    from lmforge.benchmarks import BUNDLED
    from lmforge.eval.tasks.data import FULL_SETS_HINT

    names = [t.name for t in tasks if t.source.startswith(str(BUNDLED))]
    if not names:
        return []
    shown = ", ".join(sorted({n.split("_")[0] if n.startswith("mmlu_") else n for n in names}))
    note = (
        f"{shown}: scored on the subsets shipped with lmforge (the first 300 questions; 5 per MMLU "
        f"subject), not the full benchmarks; {FULL_SETS_HINT}"
    )
    return [note]


def _add_text_perplexity(lm, args, results: dict) -> None:
    """--text-file / --shards results join the task table as perplexity rows."""
    import time

    from lmforge.eval.perplexity import perplexity_of_shards, perplexity_of_texts, read_text_documents
    from lmforge.eval.runner import WindowBar

    show = getattr(args, "progress", True)
    for f in args.text_file:
        name = f"text:{Path(f).name}"
        try:
            t0 = time.perf_counter()
            with WindowBar(name, show) as bar:
                s, _ = perplexity_of_texts(
                    lm, read_text_documents(f), batch_size=args.batch_size, progress=bar
                )
            results["tasks"][name] = _ppl_entry(
                s,
                str(f),
                time.perf_counter() - t0,
                ("word_perplexity", "byte_perplexity", "bits_per_byte", "token_perplexity"),
            )
        except LmforgeError as e:
            results["errors"][name] = str(e)
    if args.shards:
        name = f"shards:{Path(args.shards).name}/{args.shard_split}"
        try:
            if not hasattr(lm, "tok") or not hasattr(lm.tok, "token_bytes"):
                raise LmforgeError("--shards needs an lmforge run (its tokenizer wrote the shards)")
            t0 = time.perf_counter()
            with WindowBar(name, show) as bar:
                s = perplexity_of_shards(
                    lm,
                    args.shards,
                    lm.tok.token_bytes(),
                    args.shard_split,
                    batch_size=args.batch_size,
                    progress=bar,
                )
            results["tasks"][name] = _ppl_entry(
                s,
                str(args.shards),
                time.perf_counter() - t0,
                ("bits_per_byte", "byte_perplexity", "token_perplexity"),
            )
        except LmforgeError as e:
            results["errors"][name] = str(e)


def _ppl_entry(s: dict, source: str, seconds: float, metrics) -> dict:
    return {
        "metrics": {m: s[m] for m in metrics},
        "stderr": {m: None for m in metrics},
        "n": s["documents"],
        "num_fewshot": 0,
        "output_type": "loglikelihood_rolling",
        "source": source,
        "group": [],
        "counts": {k: s[k] for k in ("tokens", "bytes", "words") if k in s},
        "seconds": round(seconds, 3),
        "docs_per_s": round(s["documents"] / seconds, 2) if seconds > 0 else None,
        "version": "1.0",
    }


RUN_TASKS = ("arc_easy", "arc_challenge", "hellaswag", "mmlu", "truthfulqa_mc1", "truthfulqa_mc2")


def evaluate_run(
    run_dir: str | Path,
    tasks: tuple[str, ...] = RUN_TASKS,
    limit: int | None = 100,
    shard_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    batch_size: int = 16,
) -> dict:
    """The eval stage of `lmforge run`: multiple-choice tasks (their chance levels are in the
    results) on the first `limit` documents, plus bits per byte on the held-out token shards.
    Writes <run>/eval/results.{json,md}. Without `data_dir` (or $LMFORGE_EVAL_DATA) the benchmarks
    are the subsets shipped with lmforge, and `notes` says so; a task that cannot be scored is
    noted in `errors` and the others still run."""
    from lmforge.eval.lm import LmforgeLM
    from lmforge.eval.results import write_results
    from lmforge.eval.runner import evaluate
    from lmforge.eval.tasks import get_tasks

    lm = LmforgeLM.from_run(run_dir)
    task_objs, errors = [], {}
    for name in tasks:
        try:
            task_objs += get_tasks(name, data_dir)
        except LmforgeError as e:
            errors[name] = str(e)
    results = evaluate(lm, task_objs, limit=limit, batch_size=batch_size, progress=False)
    results["errors"].update(errors)
    results["notes"] = subset_notes(task_objs)
    if shard_dir is not None:
        args = argparse.Namespace(
            text_file=[], shards=str(shard_dir), shard_split="val", batch_size=batch_size, progress=True
        )
        _add_text_perplexity(lm, args, results)
    write_results(results, Path(run_dir) / "eval")
    return results


def run_compare(args) -> int:
    from lmforge.eval.results import compare, load_results

    a, b = load_results(args.a), load_results(args.b)
    print(compare(a, b, Path(args.a).name or "A", Path(args.b).name or "B"))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m lmforge.eval.cli ...`) until lmforge/cli.py wires `eval`."""
    parser = argparse.ArgumentParser(prog="lmforge")
    sub = parser.add_subparsers(dest="command")
    add_parser(sub)
    args = parser.parse_args(["eval", *(argv if argv is not None else sys.argv[1:])])
    try:
        return run(args)
    except LmforgeError as e:
        print(f"lmforge: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
