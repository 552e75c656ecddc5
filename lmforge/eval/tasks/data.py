"""Reading benchmark files: a local folder (original formats), the subsets bundled with lmforge,
or the Hugging Face hub.

Local layout (the files as their authors published them; any file may also be gzipped, `.gz`):

    arc/ARC-Easy/ARC-Easy-{Test,Dev,Train}.jsonl       AI2 layout (question.stem, question.choices)
    arc/ARC-Challenge/ARC-Challenge-{Test,Dev,Train}.jsonl
    hellaswag/hellaswag_{val,train}.jsonl              rowanz/hellaswag
    mmlu/{test,dev,val}/<subject>_{test,dev,val}.csv   Hendrycks CSV, no header
    truthfulqa/v0/{mc_task.json,TruthfulQA.csv}        sylinrl/TruthfulQA, Sep-2021 release
    wikitext-2/{test,valid}.txt                        tokenized WikiText-2 (or ../corpora/wikitext-2/)

Without --data-dir or $LMFORGE_EVAL_DATA, the subsets in lmforge/benchmarks/ are used (the
first few hundred items of each file in this layout; their README names sources and licences).
Every loader returns documents in the *hub* layout that lm-eval's task definitions read, so prompts
are built by one code path whichever source is used. `--hub` loads the same datasets with
`datasets.load_dataset` on a machine that is online, or from $LMFORGE_HUB_MIRROR, a folder holding
hub dataset repositories as <owner>/<name>/ (e.g. `git clone`d onto an offline cluster).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from collections.abc import Callable, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

from lmforge.benchmarks import BUNDLED
from lmforge.errors import LmforgeError

ENV_VAR = "LMFORGE_EVAL_DATA"


HUB_MIRROR_VAR = "LMFORGE_HUB_MIRROR"
FULL_SETS_HINT = (
    f"for the full sets: --data-dir DIR or ${ENV_VAR} (a folder in the layout of "
    "lmforge/benchmarks/README.md), or --hub (Hugging Face hub, needs `datasets`)"
)


def default_data_dir() -> Path:
    """$LMFORGE_EVAL_DATA, else the subsets bundled with lmforge."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    return BUNDLED


def is_bundled(root: Path | None) -> bool:
    return root is not None and Path(root).resolve() == BUNDLED


def find(path: Path) -> Path | None:
    """`path`, or its gzipped twin `path.gz`, whichever exists."""
    for cand in (path, path.with_name(path.name + ".gz")):
        if cand.is_file():
            return cand
    return None


def read_text(path: Path) -> str:
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return f.read()
    return path.read_text(encoding="utf-8")


def read_jsonl(path: Path) -> list[dict]:
    docs = []
    for lineno, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            docs.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise LmforgeError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    return docs


class LazyDocs(Sequence):
    """Documents parsed and processed on first access: a --limit run (or a test) reads only the
    documents it scores and the few-shot examples it draws. `random.sample` over it draws the
    same indices as over a list of the same length, so few-shot sampling is unchanged."""

    def __init__(self, raw: list, parse: Callable[[Any], dict]):
        self.raw, self.parse, self.memo = raw, parse, {}

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if i not in self.memo:
            self.memo[i] = self.parse(self.raw[i])
        return self.memo[i]


def read_csv_rows(path: Path, header: bool) -> list[dict] | list[list[str]]:
    f = io.StringIO(read_text(path).removeprefix("\ufeff"), newline="")
    return list(csv.DictReader(f)) if header else [row for row in csv.reader(f) if row]


def hub_split(path: str, name: str | None, split: str) -> list[dict] | None:
    """One split of a hub dataset as a list of dicts (None if the dataset has no such split).
    With $LMFORGE_HUB_MIRROR set, the repository is read from <mirror>/<path> instead."""
    try:
        import datasets
    except ImportError:
        raise LmforgeError("--hub needs the `datasets` package: pip install 'lmforge[eval]'") from None
    where = path
    if os.environ.get(HUB_MIRROR_VAR):
        local = Path(os.environ[HUB_MIRROR_VAR]) / path
        if not local.is_dir():
            raise LmforgeError(f"{path} is not in ${HUB_MIRROR_VAR} (no folder {local})")
        where = str(local)
    try:
        ds = datasets.load_dataset(where, name)
    except Exception as e:  # noqa: BLE001 -- network, auth, missing dataset: one line for the user
        raise LmforgeError(
            f"cannot load {path}{'/' + name if name else ''} from the hub: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    return [dict(r) for r in ds[split]] if split in ds else None


# ---------------------------------------------------------------- ARC


def arc_local(root: Path, config: str, split: str) -> list[dict] | None:
    name = {"test": "Test", "validation": "Dev", "train": "Train"}[split]
    path = find(root / "arc" / config / f"{config}-{name}.jsonl")
    if path is None:
        return None
    out = []
    for lineno, d in enumerate(read_jsonl(path), 1):
        try:
            q = d["question"]
            out.append(
                {
                    "id": d["id"],
                    "question": q["stem"],
                    "choices": {
                        "text": [c["text"] for c in q["choices"]],
                        "label": [c["label"] for c in q["choices"]],
                    },
                    "answerKey": d["answerKey"],
                }
            )
        except (KeyError, TypeError) as e:
            raise LmforgeError(f"{path}:{lineno}: missing field {e} (expected the AI2 ARC layout)") from None
    return out


# ---------------------------------------------------------------- HellaSwag


def hellaswag_local(root: Path, split: str, process: Callable[[dict], dict]) -> Sequence[dict] | None:
    name = {"validation": "val", "train": "train", "test": "test"}[split]
    path = find(root / "hellaswag" / f"hellaswag_{name}.jsonl")
    if split == "test" or path is None:  # the public test file has no labels
        return None
    lines = [ln for ln in read_text(path).split("\n") if ln.strip()]

    def parse(line: str) -> dict:
        try:
            return process(json.loads(line))
        except (json.JSONDecodeError, KeyError) as e:
            raise LmforgeError(f"{path}: bad record ({e})") from None

    return LazyDocs(lines, parse)


# ---------------------------------------------------------------- MMLU


def mmlu_local(root: Path, subject: str, split: str) -> list[dict] | None:
    name = {"test": "test", "validation": "val", "dev": "dev"}.get(split)
    if name is None:
        return None
    path = find(root / "mmlu" / name / f"{subject}_{name}.csv")
    if path is None:
        return None
    out = []
    for lineno, row in enumerate(read_csv_rows(path, header=False), 1):
        if len(row) != 6 or row[5] not in ("A", "B", "C", "D"):
            raise LmforgeError(f"{path}:{lineno}: expected question,A,B,C,D,answer with answer in A-D")
        out.append(
            {"question": row[0], "subject": subject, "choices": row[1:5], "answer": "ABCD".index(row[5])}
        )
    return out


# ---------------------------------------------------------------- TruthfulQA


def truthfulqa_mc_local(root: Path, release: str = "v0") -> list[dict]:
    want = root / "truthfulqa" / release / "mc_task.json" if release else root / "truthfulqa" / "mc_task.json"
    path = find(want)
    if path is None:
        raise LmforgeError(f"TruthfulQA file not found: {want}")
    out = []
    for d in json.loads(read_text(path)):
        out.append(
            {
                "question": d["question"],
                **{
                    k: {"choices": list(d[k]), "labels": list(d[k].values())}
                    for k in ("mc1_targets", "mc2_targets")
                },
            }
        )
    return out


def truthfulqa_gen_local(root: Path, release: str = "v0") -> list[dict]:
    want = (
        root / "truthfulqa" / release / "TruthfulQA.csv"
        if release
        else root / "truthfulqa" / "TruthfulQA.csv"
    )
    path = find(want)
    if path is None:
        raise LmforgeError(f"TruthfulQA file not found: {want}")

    def answers(s: str) -> list[str]:
        return [a.strip() for a in s.split(";") if a.strip()]

    return [
        {
            "type": r["Type"],
            "category": r["Category"],
            "question": r["Question"],
            "best_answer": r["Best Answer"],
            "correct_answers": answers(r["Correct Answers"]),
            "incorrect_answers": answers(r["Incorrect Answers"]),
            "source": r["Source"],
        }
        for r in read_csv_rows(path, header=True)
    ]


# ---------------------------------------------------------------- WikiText


def wikitext_file(root: Path, split: str) -> Path | None:
    name = {"test": "test.txt", "validation": "valid.txt"}.get(split)
    if name is None:
        return None
    for base in (root / "wikitext-2", root.parent / "corpora" / "wikitext-2"):
        if (base / name).is_file():
            return base / name
    return None


def split_wikitext_articles(text: str) -> list[str]:
    """Cut a WikiText file into articles at its top-level headings (` = Title = ` lines); lines
    before the first heading go to the first article, and joining the articles with "\n" gives the
    file back."""
    lines = text.split("\n")
    starts = [
        i
        for i, ln in enumerate(lines)
        if ln.startswith(" = ") and ln.endswith(" = ") and not ln.startswith(" = = ")
    ]
    if not starts:
        return [text] if text.strip() else []
    starts[0] = 0
    bounds = starts + [len(lines)]
    return ["\n".join(lines[a:b]) for a, b in pairwise(bounds)]


def wikitext_local(root: Path, split: str) -> list[dict] | None:
    path = wikitext_file(root, split)
    if path is None:
        return None
    return [{"page": p} for p in split_wikitext_articles(path.read_text(encoding="utf-8"))]
