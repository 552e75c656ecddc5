"""A task: where its documents come from, how a prompt is built, and what is scored.

The fields mirror lm-evaluation-harness's task YAML (`lm_eval/config/task.py`), so a built-in task
and a user's YAML task (`custom.py`) are the same object. Prompt assembly follows
`lm_eval/api/task.py: ConfigurableTask.fewshot_context, build_qa_turn` (docs/eval-semantics.md §1.1):

    context = [system + fewshot_delimiter] + description
              + sum_k [ text(shot_k) + target_delimiter + target(shot_k) + fewshot_delimiter ]
              + text(doc)
    continuation_i = target_delimiter + choice_i

Partial scoring (lm-eval's "multiple inputs", e.g. WinoGrande): `doc_to_text` gives the gold
option's index, `doc_to_choice` the contexts (one per option) and `doc_to_target` the continuation
they share; request i = (shots + choice_i, target_delimiter + target), and a few-shot example shows
its gold context followed by the target (`ConfigurableTask.fewshot_context, multiple_input_context,
construct_requests`). As in lm-eval, a task is partial when doc_to_text gives an int.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lmforge.errors import LmforgeError

Doc = dict[str, Any]
SPLITS = ("test", "validation", "train")


@dataclass
class Task:
    name: str
    output_type: str  # "multiple_choice" | "generate_until" | "loglikelihood_rolling"
    load_split: Callable[[str], list[Doc] | None]  # split name -> documents, None when absent
    doc_to_text: Callable[[Doc], str]
    doc_to_target: Callable[[Doc], Any]  # gold choice index, or reference text
    doc_to_choice: Callable[[Doc], list[str]] | None = None
    description: str | Callable[[Doc], str] = ""
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    test_split: str | None = "test"
    validation_split: str | None = "validation"
    training_split: str | None = "train"
    fewshot_split: str | None = None  # None: train, else validation, else test (lm-eval's rule)
    fewshot_sampler: str = "random"  # "random" (seeded, consumed doc by doc) or "first_n"
    num_fewshot: int = 0  # the task's default
    metrics: Sequence[str] = ("acc",)
    process_results: Callable[[Doc, list], dict[str, float]] | None = None  # custom scoring
    generation: dict = field(default_factory=dict)  # until, max_gen_toks, temperature
    group: tuple[str, ...] = ()  # group path, outermost first, e.g. ("mmlu", "mmlu_stem")
    count_text: Callable[[Doc], str] | None = None  # rolling: text whose words/bytes are counted
    chance: Callable[[list[Doc]], float] | None = None  # score of a random guesser
    partial: bool | None = None  # multiple contexts, one continuation; None: doc_to_text gives an int
    source: str = ""  # which files / dataset the documents came from (recorded in results)
    version: str = "1.0"
    _cache: dict = field(default_factory=dict, repr=False)

    # ---- documents

    def split_docs(self, split: str | None) -> list[Doc] | None:
        if split is None:
            return None
        if split not in self._cache:
            self._cache[split] = self.load_split(split)
        return self._cache[split]

    def eval_split(self) -> str:
        """test if the task has one, else validation (lm-eval's Task.eval_docs)."""
        for split in (self.test_split, self.validation_split):
            if split is not None and self.split_docs(split):
                return split
        raise LmforgeError(f"task {self.name}: no test or validation documents found ({self.source})")

    def eval_docs(self) -> list[Doc]:
        return self.split_docs(self.eval_split())  # type: ignore[return-value]

    def fewshot_pool(self) -> tuple[str | None, list[Doc]]:
        if self.fewshot_split is not None:
            docs = self.split_docs(self.fewshot_split)
            if not docs:
                raise LmforgeError(
                    f"task {self.name}: few-shot split {self.fewshot_split!r} has no documents"
                )
            return self.fewshot_split, docs
        for split in (self.training_split, self.validation_split, self.test_split):
            docs = self.split_docs(split)
            if docs:
                return split, docs
        raise LmforgeError(f"task {self.name}: no documents to draw few-shot examples from")

    # ---- prompts

    def multiple_inputs(self, docs: Sequence[Doc] | None = None) -> bool:
        """Whether the task is partially scored; decided from the first document (lm-eval's rule)."""
        if self.partial is None:
            docs = docs or self.eval_docs()
            self.partial = (
                self.output_type == "multiple_choice"
                and self.doc_to_choice is not None
                and bool(docs)
                and isinstance(self.doc_to_text(docs[0]), int)
            )
        return self.partial

    def query_text(self, doc: Doc) -> str:
        """A few-shot example's question: doc_to_text, or the gold context of a partial task."""
        return self.choices(doc)[self.gold(doc)] if self.partial else self.doc_to_text(doc)

    def target_text(self, doc: Doc) -> str:
        """What a few-shot example shows as its answer: the gold choice's text for an index."""
        t = self.doc_to_target(doc)
        if isinstance(t, int) and self.doc_to_choice is not None:
            return self.doc_to_choice(doc)[t]
        if isinstance(t, list):
            return str(t[0])
        return str(t)

    def choices(self, doc: Doc) -> list[str]:
        if self.doc_to_choice is None:
            raise LmforgeError(f"task {self.name} has no choices (output_type {self.output_type})")
        return self.doc_to_choice(doc)

    def gold(self, doc: Doc) -> int:
        t = self.doc_to_text(doc) if self.partial else self.doc_to_target(doc)
        if isinstance(t, str):
            choices = self.choices(doc)
            if t.strip().isdigit():
                t = int(t)
            elif t in choices:
                t = choices.index(t)
            else:
                raise LmforgeError(f"task {self.name}: gold answer {t!r} is neither an index nor a choice")
        n = len(self.choices(doc))
        if not 0 <= t < n:
            raise LmforgeError(f"task {self.name}: gold index {t} is out of range for {n} choices")
        return t

    def build_parts(
        self,
        docs: Sequence[Doc],
        num_fewshot: int | None = None,
        seed: int = 1234,
        system_prompt: str | None = None,
    ) -> list[tuple[str, str, str]]:
        """(head, shots, query) of every document, in order: head = system prompt + description,
        shots = the solved examples, each ending in fewshot_delimiter. The random sampler is seeded
        once per task and consumed document by document, so shots depend on document order, as in
        lm-eval."""
        k = self.num_fewshot if num_fewshot is None else num_fewshot
        partial = self.multiple_inputs(docs)
        sampler = FewshotSampler(self, k, seed) if k > 0 else None
        out = []
        for doc in docs:
            desc = self.description(doc) if callable(self.description) else self.description
            head = join_with(system_prompt, desc, self.fewshot_delimiter)
            shots = sampler.sample(doc) if sampler else []
            body = "".join(
                self.query_text(s) + self.target_delimiter + self.target_text(s) + self.fewshot_delimiter
                for s in shots
            )
            out.append((head, body, "" if partial else self.doc_to_text(doc)))  # partial: the choices follow
        return out

    def build_contexts(
        self,
        docs: Sequence[Doc],
        num_fewshot: int | None = None,
        seed: int = 1234,
        system_prompt: str | None = None,
    ) -> list[str]:
        """The prompt of every document, in order (see build_parts); for a partial task, the part
        before the contexts (see mc_requests)."""
        return [
            head + body + query
            for head, body, query in self.build_parts(docs, num_fewshot, seed, system_prompt)
        ]

    def mc_requests(self, contexts: Sequence[str], docs: Sequence[Doc]) -> list[list[tuple[str, str]]]:
        """The (context, continuation) requests of every multiple-choice document, given its prompt."""
        if self.multiple_inputs(docs):
            return [
                [(ctx + c, self.target_delimiter + str(self.doc_to_target(d))) for c in self.choices(d)]
                for ctx, d in zip(contexts, docs)
            ]
        return [[(ctx, self.target_delimiter + c) for c in self.choices(d)] for ctx, d in zip(contexts, docs)]

    def build_chat_messages(
        self,
        docs: Sequence[Doc],
        num_fewshot: int | None = None,
        seed: int = 1234,
        system_prompt: str | None = None,
    ) -> list[list[dict]]:
        """The prompt of every document as chat messages, lm-eval's --apply_chat_template without
        --fewshot_as_multiturn: a system message with the system prompt and description (when there
        is one), then one user turn with the shots and the question concatenated. The same shots as
        build_contexts (same sampler, same order)."""
        out = []
        for head, body, query in self.build_parts(docs, num_fewshot, seed, system_prompt):
            msgs = [{"role": "system", "content": head}] if head.strip() else []
            msgs.append({"role": "user", "content": body + query})
            out.append(msgs)
        return out


def join_with(prefix: str | None, suffix: str | None, delimiter: str) -> str:
    """prefix + delimiter + suffix, without the delimiter when whitespace already separates them
    (lm-eval's maybe_delimit, used to put a system prompt before the description)."""
    if not prefix:
        return suffix or ""
    if not suffix:
        return prefix
    return prefix + suffix if (prefix[-1].isspace() or suffix[0].isspace()) else prefix + delimiter + suffix


class FewshotSampler:
    """lm-eval's ContextSampler / FirstNSampler (`lm_eval/api/samplers.py`).

    random: `Random(seed).sample(pool, k)` per document; when the few-shot split is the eval split
    (lm-eval's test: fewshot split name == test split name) it draws k + 1 and drops the document
    itself. first_n: the first k documents of the pool, in stored order.
    """

    def __init__(self, task: Task, k: int, seed: int):
        self.k = k
        self.kind = task.fewshot_sampler
        if self.kind not in ("random", "first_n"):
            raise LmforgeError(f"task {task.name}: unknown few-shot sampler {self.kind!r} (random, first_n)")
        self.split, self.pool = task.fewshot_pool()
        self.exclude_self = task.fewshot_split == task.test_split
        self.rnd = random.Random(seed)
        if k > len(self.pool) - (1 if self.exclude_self else 0):
            raise LmforgeError(
                f"task {task.name}: {k} few-shot examples requested but the "
                f"{self.split} split has {len(self.pool)}"
            )

    def sample(self, doc: Doc) -> list[Doc]:
        if self.kind == "first_n":
            pool = [d for d in self.pool if d != doc] if self.exclude_self else self.pool
            return pool[: self.k]
        if not self.exclude_self:
            return self.rnd.sample(self.pool, self.k)
        res = [d for d in self.rnd.sample(self.pool, self.k + 1) if d != doc][: self.k]
        if len(res) < self.k:  # duplicates of the doc were drawn: resample without any copy
            res = self.rnd.sample([d for d in self.pool if d != doc], self.k)
        return res
