"""Evaluation: multiple-choice benchmarks with lm-evaluation-harness's exact semantics, perplexity,
generation with BLEU/ROUGE, YAML tasks, and an LLM judge.

    from lmforge.eval import LmforgeLM, get_tasks, evaluate
    lm = LmforgeLM.from_run("runs/tiny")
    results = evaluate(lm, get_tasks("arc_easy") + get_tasks("hellaswag"), limit=100)

Modules: lm (the model interface), loglik (the scoring engine), metrics, tasks/ (built-in and YAML
tasks), perplexity, generation, runner (run + aggregate), results (files, tables, compare), judge,
cache, cli.
"""

from lmforge.eval.lm import LM, HFCausalLM, LmforgeLM
from lmforge.eval.loglik import loglikelihood, loglikelihood_rolling
from lmforge.eval.results import compare, report_section, write_results
from lmforge.eval.runner import evaluate, run_task
from lmforge.eval.tasks import get_tasks
from lmforge.eval.tasks.custom import load_task_file

__all__ = ["LM", "HFCausalLM", "LmforgeLM", "compare", "evaluate", "get_tasks", "load_task_file", "loglikelihood",
           "loglikelihood_rolling", "report_section", "run_task", "write_results"]
