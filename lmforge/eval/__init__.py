"""Evaluation: multiple-choice benchmarks with lm-evaluation-harness's exact semantics, perplexity,
generation with BLEU/ROUGE, YAML tasks, and an LLM judge.

    from lmforge.eval import LmforgeLM, get_tasks, evaluate
    lm = LmforgeLM.from_run("runs/tiny")
    results = evaluate(lm, get_tasks("arc_easy") + get_tasks("hellaswag"), limit=100)

Modules: lm (the model interface), loglik (the scoring engine), metrics, tasks/ (built-in and YAML
tasks), perplexity, generation, runner (run + aggregate), results (files, tables, compare), judge,
cache, cli.
"""

import importlib

# Imported on first use, so `lmforge --help` and `lmforge eval --help` don't pay for torch.
_EXPORTS = {
    "LM": "lm",
    "HFCausalLM": "lm",
    "LmforgeLM": "lm",
    "loglikelihood": "loglik",
    "loglikelihood_rolling": "loglik",
    "compare": "results",
    "report_section": "results",
    "write_results": "results",
    "evaluate": "runner",
    "run_task": "runner",
    "get_tasks": "tasks",
    "load_task_file": "tasks.custom",
}
__all__ = [
    "LM",
    "HFCausalLM",
    "LmforgeLM",
    "compare",
    "evaluate",
    "get_tasks",
    "load_task_file",
    "loglikelihood",
    "loglikelihood_rolling",
    "report_section",
    "run_task",
    "write_results",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"lmforge.eval.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'lmforge.eval' has no attribute {name!r}")
