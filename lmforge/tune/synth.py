"""Synthetic instruction data from a teacher model (`lmforge synth`), Self-Instruct style.

Self-Instruct (Wang et al. 2023) grows a task pool from 175 human-written seed tasks: a teacher
LLM sees a few tasks from the pool and writes new ones; a new task joins the pool only if its
instruction is not too close to any already there (ROUGE-L < 0.7) and passes simple heuristics.
Alpaca (Taori et al. 2023) asks for instruction, input and output in one call, which is what
this module does: each request shows `num_prompt_tasks` numbered tasks (mostly human seeds, the
rest generated ones, drawn with a seeded RNG) and asks for more in the same format.

Filters, in order (a rejected task is counted under its reason): unparsable, instruction length
in words, empty or over-long output, blocklisted words (tasks a text model cannot do: images,
files, ...), refusal patterns in the output, and ROUGE-L against every instruction in the pool.

The teacher is any OpenAI-compatible server (`/chat/completions` or `/completions`), including
`lmforge serve`; the API key comes from the environment variable named by api_key_env. Requests
run `concurrency` at a time; a failure (connection error, timeout, 408/429/5xx, a body that is
not the expected JSON, text with no task in it) is retried with exponential backoff and jitter,
then reported and skipped. Accepted tasks are appended to the output one whole line at a time
(write, flush, fsync), so the file never holds a partial record; a rerun reads the file first,
puts its tasks in the pool and continues until it holds num_instructions records, so it never
writes a duplicate (a duplicate has ROUGE-L 1 with its original).
"""

from __future__ import annotations

import json
import os
import random
import re
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.errors import LmforgeError
from lmforge.tune.config import SynthConfig

HEADER = (
    "You are asked to come up with a set of diverse tasks. These task instructions will be given to "
    "a language model, and we will evaluate how well it completes them.\n"
    "Requirements:\n"
    "1. Vary the verbs and the kind of task: open questions, writing, classification, editing, "
    "reasoning, extraction, brainstorming, and so on.\n"
    "2. Each instruction is one or two sentences, in English, and doable by a text-only model "
    "(no images, audio, files or web browsing).\n"
    "3. The input, when a task needs one, is a concrete example of at most 100 words; otherwise "
    "write <noinput>.\n"
    "4. The output is a good, complete answer to the instruction and input.\n"
    "Use exactly this format for every task:\n"
    "N. Instruction: ...\nN. Input: ...\nN. Output: ...\n###\n\n"
)
NOINPUT = "<noinput>"
_TASK = re.compile(
    r"(\d+)\.\s*Instruction:(.*?)\n\s*\1\.\s*Input:(.*?)\n\s*\1\.\s*Output:(.*?)(?=\n\s*###|\n\s*\d+\.\s*Instruction:|\Z)",
    re.DOTALL,
)


class TeacherError(Exception):
    """A request that failed after its retries; `fatal` when retrying cannot help (e.g. HTTP 401)."""

    def __init__(self, msg: str, fatal: bool = False) -> None:
        super().__init__(msg)
        self.fatal = fatal


@dataclass
class SynthResult:
    out: str
    records: int  # in the output file now
    added: int  # by this invocation
    requests: int
    failed_requests: int
    rejected: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------- seeds, prompts, parsing


def load_seed_tasks(path: str | Path) -> list[dict]:
    """Self-Instruct seed tasks -> [{"instruction", "input", "output"}] (first instance of each)."""
    path = Path(path)
    if not path.is_file():
        raise LmforgeError(f"seed task file not found: {path}")
    tasks = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            inst = rec["instances"][0] if "instances" in rec else rec
            task = {
                "instruction": rec["instruction"],
                "input": inst.get("input", ""),
                "output": inst["output"],
            }
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise LmforgeError(
                f"{path}:{n}: not a seed task {{instruction, instances: [{{input, output}}]}}"
            ) from None
        if not all(isinstance(v, str) for v in task.values()):
            raise LmforgeError(f"{path}:{n}: instruction, input and output must be strings")
        tasks.append(task)
    if not tasks:
        raise LmforgeError(f"{path} holds no seed tasks")
    return tasks


def format_task(i: int, task: dict) -> str:
    inp = task["input"].strip() or NOINPUT
    return (
        f"{i}. Instruction: {task['instruction'].strip()}\n{i}. Input: {inp}\n"
        f"{i}. Output: {task['output'].strip()}\n###\n"
    )


def build_prompt(examples: list[dict]) -> str:
    """The request text: header, the numbered examples, and the number of the first new task."""
    body = "".join(format_task(i + 1, t) for i, t in enumerate(examples))
    return HEADER + body + f"{len(examples) + 1}. Instruction:"


def parse_tasks(text: str, first: int) -> list[dict]:
    """Tasks in the teacher's text. `first` is the number the prompt ended on (its "N. Instruction:"
    is put back in front, since a completion endpoint continues after it)."""
    if not re.match(r"\s*\d+\.\s*Instruction:", text):
        text = f"{first}. Instruction:" + text
    tasks = []
    for _, ins, inp, out in _TASK.findall(text):
        inp = inp.strip()
        tasks.append(
            {
                "instruction": ins.strip(),
                "input": "" if inp.lower() in (NOINPUT, "none", "") else inp,
                "output": out.strip(),
            }
        )
    return tasks


# ---------------------------------------------------------------- filters


class TaskFilter:
    """Decides whether a task joins the pool (`check`)."""

    def __init__(self, cfg: SynthConfig, pool: list[str]) -> None:
        try:
            from rouge_score import rouge_scorer
        except ImportError:
            raise LmforgeError(
                "lmforge synth needs the rouge-score package: pip install rouge-score"
            ) from None
        self.cfg = cfg
        self.scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        self.pool = list(pool)
        self.block = [re.compile(rf"\b{re.escape(w)}\b", re.IGNORECASE) for w in cfg.blocklist]
        self.refusal = [re.compile(p, re.IGNORECASE) for p in cfg.refusal_patterns]

    def max_similarity(self, instruction: str) -> float:
        return max((self.scorer.score(p, instruction)["rougeL"].fmeasure for p in self.pool), default=0.0)

    def check(self, task: dict) -> tuple[str | None, float]:
        """(why the task is rejected, or None; its highest ROUGE-L F against the pool)."""
        ins, out = task["instruction"], task["output"]
        words = len(ins.split())
        if not (self.cfg.min_instruction_words <= words <= self.cfg.max_instruction_words):
            return "instruction length", 0.0
        if not out or len(out) > self.cfg.max_output_chars:
            return "output length", 0.0
        if not ins[0].isalnum():  # Self-Instruct drops instructions starting with punctuation
            return "format", 0.0
        if any(b.search(ins) for b in self.block):
            return "blocklist", 0.0
        if any(r.search(out) or r.search(ins) for r in self.refusal):
            return "refusal", 0.0
        sim = self.max_similarity(ins)
        return ("similar to pool" if sim >= self.cfg.rouge_threshold else None), sim

    def add(self, instruction: str) -> None:
        self.pool.append(instruction)


# ---------------------------------------------------------------- the teacher


class Teacher:
    """POSTs to an OpenAI-compatible endpoint with retries; returns the generated text."""

    RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})

    def __init__(self, cfg: SynthConfig) -> None:
        self.cfg = cfg
        self.url = cfg.base_url.rstrip("/") + (
            "/chat/completions" if cfg.endpoint == "chat" else "/completions"
        )
        self.headers = {"Content-Type": "application/json"}
        key = os.environ.get(cfg.api_key_env)
        if key:
            self.headers["Authorization"] = f"Bearer {key}"

    def body(self, prompt: str, seed: int) -> dict:
        c = self.cfg
        body = {
            "model": c.model,
            "temperature": c.temperature,
            "top_p": c.top_p,
            "max_tokens": c.max_tokens,
            "seed": seed,
        }
        if c.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        return body

    def once(self, prompt: str, seed: int) -> str:
        data = json.dumps(self.body(prompt, seed)).encode("utf-8")
        req = urllib.request.Request(self.url, data=data, headers=self.headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.cfg.timeout) as resp:
            payload = json.loads(resp.read().decode("utf-8"))
        choice = payload["choices"][0]
        text = choice["message"]["content"] if self.cfg.endpoint == "chat" else choice["text"]
        if not isinstance(text, str):
            raise TypeError("choices[0] holds no text")
        return text

    def ask(self, prompt: str, first: int, seed: int) -> list[dict]:
        """Tasks parsed from the teacher's answer; TeacherError after the last retry."""
        c = self.cfg
        rng = random.Random(seed)
        last = ""
        for attempt in range(c.retries + 1):
            if attempt:
                time.sleep(
                    c.backoff * 2 ** (attempt - 1) * rng.uniform(0.5, 1.5)
                )  # jitter de-synchronises workers
            try:
                tasks = parse_tasks(self.once(prompt, seed + attempt), first)
                if tasks:
                    return tasks
                last = "the answer holds no task in the requested format"
            except urllib.error.HTTPError as e:
                detail = e.read()[:200].decode("utf-8", "replace")
                last = f"HTTP {e.code} {detail}"
                if e.code not in self.RETRY_STATUS:
                    raise TeacherError(f"{self.url} answered {last}", fatal=True) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            except (ValueError, KeyError, IndexError, TypeError) as e:
                last = f"unexpected response ({type(e).__name__}: {e})"
        raise TeacherError(f"{self.url}: gave up after {c.retries + 1} tries; last error: {last}")


# ---------------------------------------------------------------- output file


def read_output(path: Path, log) -> list[dict]:
    """Records already written. A torn last line (a crash mid-write on a file system that does not
    order the write) is cut off, so the file again ends on a whole record."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    keep = raw if raw.endswith(b"\n") or not raw else raw[: raw.rfind(b"\n") + 1]
    records = []
    for n, line in enumerate(keep.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec.get("instruction"), str):
                raise TypeError
        except (ValueError, TypeError, AttributeError):
            raise LmforgeError(f"{path}:{n} is not a synth record; choose another out=") from None
        records.append(rec)
    if len(keep) != len(raw):
        log(f"{path}: removed an incomplete last line ({len(raw) - len(keep)} bytes)")
        with open(path, "r+b") as f:
            f.truncate(len(keep))
    return records


def append_record(f, rec: dict) -> None:
    f.write((json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8"))  # one write per record
    f.flush()
    os.fsync(f.fileno())


# ---------------------------------------------------------------- the run


def default_log(msg: str) -> None:
    print(f"[synth] {msg}", flush=True)


def synthesize(cfg: SynthConfig, log=default_log) -> SynthResult:
    """Generate until cfg.out holds cfg.num_instructions records (or the request budget is spent)."""
    cfg.validate()
    seeds = load_seed_tasks(cfg.seeds)
    out = Path(cfg.out)
    existing = read_output(out, log)
    result = SynthResult(out=str(out), records=len(existing), added=0, requests=0, failed_requests=0)
    if len(existing) >= cfg.num_instructions:
        log(
            f"{out} already holds {len(existing)} records "
            f"(num_instructions={cfg.num_instructions}); nothing to do"
        )
        return result
    log(
        f"{len(seeds)} seed tasks, {len(existing)} records already in {out}; target {cfg.num_instructions}; "
        f"teacher {cfg.model} at {cfg.base_url}"
    )
    run = _Run(cfg, seeds, existing, result, log)
    out.parent.mkdir(parents=True, exist_ok=True)
    pool = ThreadPoolExecutor(cfg.concurrency, thread_name_prefix="synth")
    try:
        with open(out, "ab") as f:
            run.loop(f, pool)
    finally:  # don't wait for requests still running: their answers are no longer needed
        pool.shutdown(wait=False, cancel_futures=True)
    result.rejected = dict(run.rejected)
    if run.rejected:
        log("rejected: " + ", ".join(f"{k} {v}" for k, v in run.rejected.most_common()))
    log(f"{result.added} new records -> {out} ({result.records} in all)")
    return result


class _Run:
    """One invocation's state: the pool of instructions, the prompt RNG, the counts."""

    def __init__(self, cfg: SynthConfig, seeds: list[dict], existing: list[dict], result: SynthResult, log):
        self.cfg, self.seeds, self.result, self.log = cfg, seeds, result, log
        self.generated = [
            {"instruction": r["instruction"], "input": r.get("input", ""), "output": r.get("output", "")}
            for r in existing
        ]
        self.filter = TaskFilter(cfg, [t["instruction"] for t in seeds + self.generated])
        self.teacher = Teacher(cfg)
        self.budget = cfg.max_requests or 10 * cfg.num_instructions
        self.rng = random.Random(cfg.seed + len(existing))  # a resumed run does not repeat earlier prompts
        self.rejected: Counter = Counter()
        self.t0 = time.time()

    def submit(self, pool: ThreadPoolExecutor) -> Future:
        cfg = self.cfg
        n_gen = min(cfg.num_prompt_tasks - cfg.num_seed_in_prompt, len(self.generated))
        examples = self.rng.sample(
            self.seeds, min(cfg.num_prompt_tasks - n_gen, len(self.seeds))
        ) + self.rng.sample(self.generated, n_gen)
        self.rng.shuffle(examples)
        self.result.requests += 1
        return pool.submit(
            self.teacher.ask, build_prompt(examples), len(examples) + 1, self.rng.randrange(2**31)
        )

    def loop(self, f, pool: ThreadPoolExecutor) -> None:
        """Keep `concurrency` requests in flight; filter and append tasks as answers arrive (in this
        thread only, so the pool and the file need no lock)."""
        cfg, result = self.cfg, self.result
        inflight: set[Future] = set()
        failures_in_a_row = 0
        while result.records < cfg.num_instructions:
            while len(inflight) < cfg.concurrency and result.requests < self.budget:
                inflight.add(self.submit(pool))
            if not inflight:
                self.log(f"stopping: the request budget ({self.budget}, max_requests) is spent")
                return
            done, inflight = wait(inflight, return_when=FIRST_COMPLETED)
            for fut in done:
                try:
                    tasks = fut.result()
                except TeacherError as e:
                    result.failed_requests += 1
                    failures_in_a_row += 1
                    self.log(f"request failed: {e}")
                    if e.fatal or failures_in_a_row >= max(3, cfg.concurrency):
                        raise LmforgeError(
                            f"the teacher keeps failing ({e}); {result.records} records are "
                            f"safe in {cfg.out}, rerun to continue"
                        ) from None
                    continue
                failures_in_a_row = 0
                for task in tasks:
                    if result.records < cfg.num_instructions:
                        self.consider(f, task)
            rate = result.added / max(time.time() - self.t0, 1e-9)
            self.log(
                f"{result.records}/{cfg.num_instructions} records | {result.requests} requests "
                f"({result.failed_requests} failed) | rejected {sum(self.rejected.values())} | "
                f"{rate * 60:.1f}/min"
            )

    def consider(self, f, task: dict) -> None:
        why, sim = self.filter.check(task)
        if why:
            self.rejected[why] += 1
            return
        append_record(f, {**task, "meta": {"teacher": self.cfg.model, "rouge_l_max": round(sim, 4)}})
        self.filter.add(task["instruction"])
        self.generated.append(task)
        self.result.records += 1
        self.result.added += 1
