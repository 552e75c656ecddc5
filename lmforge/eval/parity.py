"""Fidelity check: run lm-evaluation-harness itself on the same model and local data as lmforge.

Two pieces (lm-eval is imported lazily; `pip install "lm-eval[hf]"`):

- `write_lm_eval_tasks(dir, data_dir, ...)`: task YAMLs that `include` lm-eval's *own* task files
  (by absolute path) and only point them at the local files (`dataset_path: json|csv`), so lm-eval
  renders prompts and scores with its own definitions (docs/eval-semantics.md §11).
- `HarnessLM`: an lmforge `LM` (e.g. an lmforge model) wrapped as an lm-eval `TemplateLM`; lm-eval
  does the tokenisation split and request building, this class scores token ids naively (full
  forward per request, batched like lm-eval's HFLM), so it is an independent implementation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import yaml

from lmforge.errors import LmforgeError
from lmforge.eval.generation import generate_until
from lmforge.eval.lm import LM
from lmforge.eval.tasks.builtin import MMLU_SUBJECTS
from lmforge.eval.tasks.data import find, read_text, split_wikitext_articles, wikitext_file

ARC_PROCESS = """
def process_arc(dataset):
    def fix(d):
        q = d["question"]
        return {"id": d["id"], "question": q["stem"],
                "choices": {"text": [c["text"] for c in q["choices"]],
                            "label": [c["label"] for c in q["choices"]]},
                "answerKey": d["answerKey"]}
    return dataset.map(fix, remove_columns=dataset.column_names)


def process_mmlu(dataset):
    return dataset.map(lambda d: {"choices": [d["A"], d["B"], d["C"], d["D"]],
                                  "answer": "ABCD".index(d["target"])})
"""


def lm_eval_dir() -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks"


def write_lm_eval_tasks(out: Path, data_dir: Path, subjects: list[str]) -> dict[str, str]:
    """Write local-data task YAMLs into `out`; returns {lmforge task name: lm-eval task name}.
    Gzipped files (the subsets shipped with lmforge) are unpacked into `out` for lm-eval."""
    out.mkdir(parents=True, exist_ok=True)

    def local(rel: str) -> str:
        path = find(data_dir / rel)
        if path is None:
            raise LmforgeError(f"{data_dir / rel}: not found")
        if path.suffix != ".gz":
            return str(path)
        plain = out / "data" / rel
        plain.parent.mkdir(parents=True, exist_ok=True)
        plain.write_text(read_text(path), encoding="utf-8")
        return str(plain)

    (out / "local_utils.py").write_text(ARC_PROCESS)
    lt = lm_eval_dir()
    names: dict[str, str] = {}

    def write(name: str, include: Path, extra: dict) -> None:
        funcs = {k: v for k, v in extra.items() if isinstance(v, str) and v.startswith("!function")}
        cfg = {
            "include": str(include),
            "task": name,
            "tag": [],
            **{k: v for k, v in extra.items() if k not in funcs},
        }
        text = yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True, width=10_000)
        (out / f"{name}.yaml").write_text(text + "".join(f"{k}: {v}\n" for k, v in funcs.items()))

    for config, ours in (("ARC-Easy", "arc_easy"), ("ARC-Challenge", "arc_challenge")):
        files = {
            "test": local(f"arc/{config}/{config}-Test.jsonl"),
            "validation": local(f"arc/{config}/{config}-Dev.jsonl"),
        }
        write(
            f"{ours}_local",
            lt / f"arc/{ours}.yaml",
            {
                "dataset_path": "json",
                "dataset_name": None,
                "dataset_kwargs": {"data_files": files},
                "training_split": None,
                "process_docs": "!function local_utils.process_arc",
            },
        )
        names[ours] = f"{ours}_local"
    write(
        "hellaswag_local",
        lt / "hellaswag/hellaswag.yaml",
        {
            "dataset_path": "json",
            "dataset_name": None,
            "training_split": None,
            "dataset_kwargs": {"data_files": {"validation": local("hellaswag/hellaswag_val.jsonl")}},
        },
    )
    names["hellaswag"] = "hellaswag_local"
    for s in subjects:
        files = {sp: local(f"mmlu/{sp}/{s}_{sp}.csv") for sp in ("test", "dev")}
        write(
            f"mmlu_{s}_local",
            lt / "mmlu/default/_default_template_yaml",
            {
                "dataset_path": "csv",
                "dataset_name": None,
                "dataset_kwargs": {
                    "data_files": files,
                    "column_names": ["question", "A", "B", "C", "D", "target"],
                },
                "description": f"The following are multiple choice questions (with answers) about "
                f"{s.replace('_', ' ')}.\n\n",
                "process_docs": "!function local_utils.process_mmlu",
            },
        )
        names[f"mmlu_{s}"] = f"mmlu_{s}_local"
    # TruthfulQA: the original mc_task.json as hub-layout JSONL (answers -> choices/labels lists).
    tq = json.loads(Path(local("truthfulqa/v0/mc_task.json")).read_text(encoding="utf-8"))
    rows = [
        {
            "question": d["question"],
            **{
                k: {"choices": list(d[k]), "labels": list(d[k].values())}
                for k in ("mc1_targets", "mc2_targets")
            },
        }
        for d in tq
    ]
    (out / "truthfulqa_mc.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for which in ("mc1", "mc2"):
        write(
            f"truthfulqa_{which}_local",
            lt / f"truthfulqa/truthfulqa_{which}.yaml",
            {
                "dataset_path": "json",
                "dataset_name": None,
                "dataset_kwargs": {"data_files": {"validation": str(out / "truthfulqa_mc.jsonl")}},
            },
        )
        names[f"truthfulqa_{which}"] = f"truthfulqa_{which}_local"
    wt = wikitext_file(data_dir, "test")
    if wt is not None:
        pages = split_wikitext_articles(wt.read_text(encoding="utf-8"))
        (out / "wikitext_pages.jsonl").write_text("".join(json.dumps({"page": p}) + "\n" for p in pages))
        write(
            "wikitext_local",
            lt / "wikitext/wikitext.yaml",
            {
                "dataset_path": "json",
                "dataset_name": None,
                "training_split": None,
                "validation_split": None,
                "dataset_kwargs": {"data_files": {"test": str(out / "wikitext_pages.jsonl")}},
            },
        )
        names["wikitext"] = "wikitext_local"
    return names


def make_harness_lm(lm: LM, batch_size: int = 16):
    """The lmforge LM as an lm-eval TemplateLM (class built lazily so lm-eval stays optional)."""
    from lm_eval import utils as lm_utils
    from lm_eval.api.model import TemplateLM

    class HarnessLM(TemplateLM):
        def __init__(self):
            super().__init__()
            self.lm = lm

        @property
        def eot_token_id(self) -> int:
            return lm.eot_token_id

        @property
        def prefix_token_id(self) -> int:
            return lm.prefix_token_id

        @property
        def max_length(self) -> int:
            return lm.max_length

        def tok_encode(self, string, add_special_tokens=None, **kw):
            return lm.encode(string)

        def tok_decode(self, tokens, **kw):
            return lm.decode(tokens)

        @torch.inference_mode()
        def _loglikelihood_tokens(self, requests, disable_tqdm=False, **kw):
            L = lm.max_length
            order = sorted(range(len(requests)), key=lambda i: -len(requests[i][1] + requests[i][2]))
            out = [None] * len(requests)
            for b in range(0, len(order), batch_size):
                idx = order[b : b + batch_size]
                inps = [(requests[i][1] + requests[i][2])[-(L + 1) :][:-1] for i in idx]
                width = max(len(x) for x in inps)
                x = torch.zeros(len(idx), width, dtype=torch.long)
                for r, inp in enumerate(inps):
                    x[r, : len(inp)] = torch.tensor(inp)
                logits = lm.head(lm.hidden(x.to(lm.device))).float()  # (B, T, V): every position, as HFLM
                logp = torch.log_softmax(logits, dim=-1)
                for r, i in enumerate(idx):
                    cont = requests[i][2]
                    n = len(inps[r])
                    rows = logp[r, n - len(cont) : n]
                    t = torch.tensor(cont)
                    out[i] = (float(rows.gather(1, t[:, None]).sum()), bool((rows.argmax(-1) == t).all()))
            return out

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            res = []
            for (text,) in [r.args for r in requests]:
                windows = [
                    lm_utils.make_disjoint_window(w)
                    for w in lm_utils.get_rolling_token_windows(
                        token_list=self.tok_encode(text),
                        prefix_token=self.prefix_token_id,
                        max_seq_len=self.max_length,
                        context_len=1,
                    )
                ]
                scored = self._loglikelihood_tokens([(None, a, b) for a, b in windows])
                res.append(sum(s[0] for s in scored))
            return res

        def generate_until(self, requests, disable_tqdm=False):
            out = []
            for ctx, kw in [r.args for r in requests]:
                until = kw.get("until", ["\n\n"])
                out.append(
                    generate_until(
                        lm,
                        ctx,
                        [until] if isinstance(until, str) else until,
                        kw.get("max_gen_toks", 256),
                        0.0,
                    )
                )
            return out

    return HarnessLM()


def run_lm_eval(
    model,
    tasks: list[str],
    include_path: Path,
    num_fewshot: int | None,
    limit: int | None,
    batch_size: int = 16,
    model_type: str = "hf",
) -> dict:
    """lm_eval.simple_evaluate on local task YAMLs; `model` is an lm-eval LM or a model_args string for
    `model_type` (`hf`, or `local-completions` for an OpenAI-compatible server)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    # lm-eval bootstraps some stderrs in a forked multiprocessing.Pool; forking a process that already
    # runs threads (torch's pool, a test's server) can leave a worker blocked forever on a lock copied
    # while held. Its own switch runs the same resamples serially (same figures, 100 iterations).
    os.environ.setdefault("DISABLE_MULTIPROC", "1")
    tm = TaskManager(include_path=[str(include_path)], include_defaults=False)
    kwargs = {"model": model_type, "model_args": model} if isinstance(model, str) else {"model": model}
    return simple_evaluate(
        **kwargs,
        tasks=tasks,
        num_fewshot=num_fewshot,
        limit=limit,
        batch_size=batch_size,
        task_manager=tm,
        log_samples=True,
        device="cpu",
        bootstrap_iters=100,
    )


def subjects_one_per_category(n: int = 1) -> list[str]:
    by_cat: dict[str, list[str]] = {}
    for s, c in sorted(MMLU_SUBJECTS.items()):
        by_cat.setdefault(c, []).append(s)
    return [s for c in sorted(by_cat) for s in by_cat[c][:n]]
