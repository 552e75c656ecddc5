"""An LLM as judge: rubric grading (1-10) and pairwise comparison in both orders.

Protocol after MT-Bench (Zheng et al. 2023, FastChat `fastchat/llm_judge/`, docs/eval-semantics.md §5.1): the
judge answers at temperature 0 and ends with a verdict in double brackets, `[[7]]` or `[[A]]`/`[[B]]`/`[[C]]`
(C = tie); a pair is judged twice with the answers swapped and a verdict that changes with the
order counts as a tie, which cancels position bias; the agreement between the two orders is reported.
Every judge prompt, raw answer and parsed verdict is saved.

The judge is any OpenAI-compatible chat endpoint (base URL, model name, key from an environment
variable; stdlib HTTP, no SDK) or a local lmforge run.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from lmforge.errors import LmforgeError

SINGLE_PROMPT = (
    "You are an impartial judge. Rate how well the assistant's answer responds to the user's question: "
    "consider helpfulness, relevance, accuracy, depth and detail. Explain briefly, then give the rating "
    "from 1 to 10 in exactly this format: [[rating]], for example [[6]].\n\n"
    "[Question]\n{question}\n\n"
    "[The Start of the Assistant's Answer]\n{answer}\n[The End of the Assistant's Answer]"
)
PAIR_PROMPT = (
    "You are an impartial judge. Compare the answers of two assistants to the user's question and decide "
    "which one answers it better. Do not let the order of the answers, their length or the assistants' "
    "names influence you. Explain briefly, then give your verdict in exactly this format: [[A]] if "
    "assistant A is better, [[B]] if assistant B is better, [[C]] for a tie.\n\n"
    "[Question]\n{question}\n\n"
    "[The Start of Assistant A's Answer]\n{a}\n[The End of Assistant A's Answer]\n\n"
    "[The Start of Assistant B's Answer]\n{b}\n[The End of Assistant B's Answer]"
)

Judge = Callable[[str], str]  # prompt -> the judge's raw answer


def openai_judge(
    base_url: str,
    model: str,
    api_key_env: str = "OPENAI_API_KEY",
    timeout: float = 120.0,
    max_tokens: int = 1024,
) -> Judge:
    """A judge behind an OpenAI-compatible /chat/completions endpoint (temperature 0)."""
    url = base_url.rstrip("/") + "/chat/completions"
    key = os.environ.get(api_key_env, "")

    def ask(prompt: str) -> str:
        body = json.dumps(
            {
                "model": model,
                "messages": [{"role": "user", "content": prompt}],
                "temperature": 0,
                "max_tokens": max_tokens,
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                data = json.loads(r.read().decode())
        except urllib.error.HTTPError as e:
            raise LmforgeError(f"judge endpoint {url} answered HTTP {e.code}: {e.read()[:200]!r}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise LmforgeError(f"cannot reach the judge endpoint {url}: {e}") from None
        except json.JSONDecodeError:
            raise LmforgeError(f"judge endpoint {url} did not answer JSON") from None
        try:
            return data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise LmforgeError(f"judge endpoint {url}: unexpected answer {str(data)[:200]}") from None

    return ask


def served_model(base_url: str, api_key_env: str = "OPENAI_API_KEY", timeout: float = 30.0) -> str:
    """The model an OpenAI-compatible endpoint serves, when it lists exactly one at GET /models."""
    url = base_url.rstrip("/") + "/models"
    key = os.environ.get(api_key_env, "")
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            ids = [m["id"] for m in json.loads(r.read().decode())["data"]]
    except urllib.error.HTTPError as e:
        raise LmforgeError(
            f"no --judge-model given and {url} answered HTTP {e.code}: pass --judge-model NAME"
        ) from None
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise LmforgeError(f"cannot reach the judge endpoint {url}: {e}") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise LmforgeError(
            f"no --judge-model given and {url} does not list models: pass --judge-model NAME"
        ) from None
    if len(ids) != 1:
        listed = ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "") if ids else "none"
        raise LmforgeError(f"{url} serves {len(ids)} models ({listed}): choose one with --judge-model NAME")
    return ids[0]


def local_judge(lm, max_new_tokens: int = 256) -> Judge:
    """A local model as judge (greedy); useful for plumbing, weak as a judge unless instruction-tuned."""
    from lmforge.eval.generation import generate_until  # torch: eval's parser imports this module

    return lambda prompt: generate_until(
        lm, prompt, until=[], max_gen_toks=min(max_new_tokens, lm.max_length - 1)
    )


_RATING = [
    re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*(?:/\s*10\s*)?\]\]"),
    re.compile(r"\[\s*(\d+(?:\.\d+)?)\s*\]"),
    re.compile(r"(?i)rating\s*[:=]?\s*(\d+(?:\.\d+)?)"),
    re.compile(r"\b(\d+(?:\.\d+)?)\s*/\s*10\b"),
]
_VERDICT = re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.IGNORECASE)


def parse_rating(text: str) -> float | None:
    """The last [[n]] (else [n], 'Rating: n', 'n/10'), when it lies in 1..10; None if unparsable."""
    for pat in _RATING:
        found = pat.findall(text)
        if found:
            value = float(found[-1])
            return value if 1 <= value <= 10 else None
    return None


def parse_verdict(text: str) -> str | None:
    """'A', 'B' or 'tie' from the last [[A]]/[[B]]/[[C]] (also [[tie]]); None if there is none."""
    found = _VERDICT.findall(text)
    if not found:
        return None
    v = found[-1].upper()
    return {"A": "A", "B": "B"}.get(v, "tie")


def grade(judge: Judge, question: str, answer: str) -> dict:
    prompt = SINGLE_PROMPT.format(question=question, answer=answer)
    raw = judge(prompt)
    return {"prompt": prompt, "raw": raw, "score": parse_rating(raw)}


def compare_pair(judge: Judge, question: str, a: str, b: str) -> dict:
    """Judge (a, b) and (b, a); the verdict holds only if both orders agree, else it is a tie."""
    p1 = PAIR_PROMPT.format(question=question, a=a, b=b)
    p2 = PAIR_PROMPT.format(question=question, a=b, b=a)
    r1, r2 = judge(p1), judge(p2)
    v1, v2 = parse_verdict(r1), parse_verdict(r2)
    v2_mapped = {"A": "B", "B": "A"}.get(v2, v2)  # back to the original labels
    consistent = v1 is not None and v1 == v2_mapped
    return {
        "order_ab": {"prompt": p1, "raw": r1, "verdict": v1},
        "order_ba": {"prompt": p2, "raw": r2, "verdict": v2, "verdict_in_ab_labels": v2_mapped},
        "winner": v1 if consistent else "tie",
        "consistent": consistent,
    }


def summarize_pairs(records: list[dict]) -> dict:
    n = len(records)
    wins = {k: sum(r["winner"] == k for r in records) for k in ("A", "B", "tie")}
    parsed = [r for r in records if r["order_ab"]["verdict"] and r["order_ba"]["verdict"]]
    return {
        "pairs": n,
        "wins_a": wins["A"],
        "wins_b": wins["B"],
        "ties": wins["tie"],
        "win_rate_a": (wins["A"] + 0.5 * wins["tie"]) / n if n else None,  # ties count half (FastChat)
        "order_agreement": sum(r["consistent"] for r in parsed) / len(parsed) if parsed else None,
        "unparsed": n - len(parsed),
    }


def _read_answers(path: str) -> list[dict]:
    from lmforge.eval.tasks.data import read_jsonl  # numpy: eval's parser imports this module

    p = Path(path)
    if not p.is_file():
        raise LmforgeError(f"answers file not found: {p}")
    rows = read_jsonl(p)
    for i, r in enumerate(rows, 1):
        for key in ("question", "answer"):
            if not isinstance(r.get(key), str):
                raise LmforgeError(f"{p}:{i}: missing string field {key!r}")
    if not rows:
        raise LmforgeError(f"{p}: no answers")
    return rows


def add_judge_parser(sub) -> None:
    j = sub.add_parser("judge", help="grade answers (1-10) or compare two sets pairwise with an LLM judge")
    j.add_argument("--answers", required=True, help='JSONL of {"question", "answer"} (set A)')
    j.add_argument("--answers-b", help="JSONL of set B (same questions, same order): pairwise mode")
    j.add_argument("--judge-url", help="OpenAI-compatible base URL, e.g. http://localhost:8000/v1")
    j.add_argument(
        "--judge-model",
        default=None,
        help="model name sent to the endpoint (default: the one "
        "model the endpoint lists at /models, e.g. what `lmforge serve` serves)",
    )
    j.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    j.add_argument("--judge-run", help="a local lmforge run as the judge instead of an endpoint")
    j.add_argument("--output", required=True, help="folder for judgments.jsonl and summary.json")


def run_judge(args) -> int:
    if bool(args.judge_url) == bool(args.judge_run):
        raise LmforgeError("give exactly one judge: --judge-url URL or --judge-run RUN_DIR")
    if args.judge_url:
        model = args.judge_model or served_model(args.judge_url, args.api_key_env)
        judge = openai_judge(args.judge_url, model, args.api_key_env)
    else:
        from lmforge.eval.lm import LmforgeLM  # torch: eval's parser imports this module

        judge = local_judge(LmforgeLM.from_run(args.judge_run))
    a = _read_answers(args.answers)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    if args.answers_b:
        b = _read_answers(args.answers_b)
        if [r["question"] for r in a] != [r["question"] for r in b]:
            raise LmforgeError("--answers and --answers-b must hold the same questions in the same order")
        for ra, rb in zip(a, b):
            records.append(
                {
                    "question": ra["question"],
                    **compare_pair(judge, ra["question"], ra["answer"], rb["answer"]),
                }
            )
        summary = summarize_pairs(records)
    else:
        for r in a:
            records.append(
                {"question": r["question"], "answer": r["answer"], **grade(judge, r["question"], r["answer"])}
            )
        scores = [r["score"] for r in records if r["score"] is not None]
        summary = {
            "answers": len(records),
            "mean_score": sum(scores) / len(scores) if scores else None,
            "unparsed": len(records) - len(scores),
        }
    (out / "judgments.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2))
    print(f"judgments: {out / 'judgments.jsonl'}")
    return 0
