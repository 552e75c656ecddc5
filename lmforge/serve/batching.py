"""Dynamic batching for the server: the requests waiting for a model are decoded together.

Each request becomes a `Row`: its prompt, its own sampling settings and seeded generator, stop
ids and stop strings, streaming callback and cancellation. A model's `Batcher` runs on a thread
of its own; whenever the model is free it takes the rows waiting (up to `max_batch`, in arrival
order) and decodes them as one left-padded batch (`prefill_batch`, lmforge/serve/generate.py),
one forward over B positions per step instead of B forwards. Rows arriving meanwhile wait for
the next batch (no iteration-level scheduling).

A row samples (lmforge/serve/sampling.py) with its own settings and generator, so it draws what
it would draw alone; its tokens differ from a lone run only if float rounding in the batched matmuls
flips a near-tie. A row that ends (stop id or string, its max_tokens, the context limit, its
client gone) ends its stream and wakes its request at once; the batch goes on for the others.
A batch of one runs `generate_tokens`, exactly the unbatched path.

One row's failure is its own: an error in what belongs to a row (its seed, its sampling, its
stream or cancellation callback) ends that row with the error and the batch goes on. The forward
pass is shared, so a failed prefill retries each row alone (only a row that fails alone fails);
a failed step, after text was streamed, ends the rows still decoding.

`generate_batch` is the same decoding for a list of token-id prompts, without a server.
"""

from __future__ import annotations

import inspect
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from lmforge.errors import LmforgeError
from lmforge.serve.config import SampleConfig
from lmforge.serve.generate import (
    TextStream,
    generate_tokens,
    model_config,
    prefill_batch,
    seeded_generator,
)
from lmforge.serve.sampling import cache_slots, sample, token_budget


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end token or stop string), "length" (max tokens or context), "cancelled"
    token_ids: list[int] = field(default_factory=list)  # the generated tokens


@dataclass(eq=False)
class Row:
    """One request: what it decodes with, the tokens so far and, once done, its Completion."""

    ids: list[int]  # the prompt
    cfg: SampleConfig
    stop_ids: set[int]
    stream: TextStream | None  # streams the text and cuts it at stop strings; None: token ids only
    budget: int  # tokens it may generate: max_new_tokens, fewer at the context limit
    cancelled: Callable[[], bool] | None = None
    tokens: list[int] = field(default_factory=list)
    result: Completion | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def take(self, token: int) -> bool:
        """Add a sampled token; True once the row has ended (and its request was answered)."""
        if token in self.stop_ids:
            return self.end("stop")
        self.tokens.append(token)
        if self.stream is not None and self.stream.add(token):
            return self.end("stop")  # a stop string
        if self.cancelled is not None and self.cancelled():
            return self.end("cancelled")
        if len(self.tokens) >= self.budget:
            return self.end("length")
        return False

    def end(self, finish: str) -> bool:
        text = "" if self.stream is None else self.stream.finish()  # flushes held-back text first
        self.result = Completion(text, len(self.ids), len(self.tokens), finish, self.tokens)
        self.done.set()
        return True

    def fail(self, error: BaseException) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()

    def wait(self) -> Completion:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.result


def run_alone(model: torch.nn.Module, row: Row) -> None:
    """Decode one row with `generate_tokens`: the unbatched path. An error ends the row (its
    `wait()` raises it), not the caller."""
    try:
        if row.budget <= 0:
            row.end("length")
            return
        tokens = generate_tokens(model, row.ids, row.cfg, stop_ids=row.stop_ids)
        try:
            for token in tokens:
                if row.take(token):
                    return
            row.end("stop")  # generate_tokens ended before a stop id
        finally:
            tokens.close()
    except Exception as e:  # noqa: BLE001 -- raised in the request's thread by row.wait()
        row.fail(e)


def run_batch(model: torch.nn.Module, rows: Sequence[Row]) -> None:
    """Decode rows together, each with its own settings; a row ends on its own (see `Row.take`),
    and so does a row that fails (see the module's docstring)."""
    device = next(model.parameters()).device
    gens: dict[Row, torch.Generator] = {}
    for row in rows:
        try:
            if row.budget <= 0:
                row.end("length")
            else:
                gens[row] = seeded_generator(row.cfg.seed, device)
        except Exception as e:  # noqa: BLE001
            row.fail(e)
    rows = [r for r in rows if not r.done.is_set()]
    if len(rows) <= 1:
        for row in rows:
            run_alone(model, row)
        return
    slots = cache_slots(max(len(r.ids) for r in rows), max(r.budget for r in rows))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            try:
                logits, step = prefill_batch(
                    model, [r.ids for r in rows], slots, any(r.cfg.compile for r in rows)
                )
            except Exception:  # noqa: BLE001 -- nothing streamed yet: each row on its own finds the culprit
                logits = None
            while logits is not None:
                # Ended rows are not sampled (their generators are theirs alone) but still fed a
                # token: every step keeps the batch's shape, and rows never see each other.
                tokens = [0] * len(rows)
                for group in sampling_groups(rows):
                    try:
                        whole = len(group) == len(rows)  # no copy of the logits
                        picked = sample(
                            logits if whole else logits[group],
                            [rows[i].cfg for i in group],
                            [gens[rows[i]] for i in group],
                        ).tolist()
                    except Exception as e:  # noqa: BLE001 -- this row's error ends this row only
                        for i in group:
                            rows[i].fail(e)
                        continue
                    for i, token in zip(group, picked):
                        tokens[i] = token
                        try:
                            rows[i].take(token)
                        except Exception as e:  # noqa: BLE001 -- its stream or cancel callback
                            rows[i].fail(e)
                if all(r.done.is_set() for r in rows):
                    return
                # (B, V); an error here ends the rows left (Batcher._loop)
                logits = step(torch.tensor(tokens, device=device))
    finally:
        model.train(was_training)
    for row in rows:  # the prefill failed
        run_alone(model, row)


def sampling_groups(rows: Sequence[Row]) -> list[list[int]]:
    """Indices of the rows still decoding, grouped for `sample`: the greedy rows together (one
    argmax; they have no generator, nothing of their own that can fail), every sampled row alone
    (an error in its generator or its draw then ends that row only)."""
    live = [i for i, r in enumerate(rows) if not r.done.is_set()]
    greedy = [i for i in live if rows[i].cfg.temperature == 0]
    return ([greedy] if greedy else []) + [[i] for i in live if rows[i].cfg.temperature != 0]


def batchable(model: torch.nn.Module) -> bool:
    """Whether `run_batch` can decode the model: a decoder whose cache takes left padding."""
    new_cache = getattr(model, "new_kv_cache", None)
    return (
        model_config(model).kind == "decoder"
        and new_cache is not None
        and "pad" in inspect.signature(new_cache).parameters
    )


def fits(rows: Sequence[Row], block_size: int) -> bool:
    """Whether the rows' KV cache fits the context: left padding puts every row's tokens after the
    longest prompt, so a short prompt with a long budget may have to wait for another batch."""
    return cache_slots(max(len(r.ids) for r in rows), max(r.budget for r in rows)) <= block_size


def generate_batch(
    model: torch.nn.Module,
    prompts_ids: Sequence[Sequence[int]],
    cfg: SampleConfig,
    stop_ids: Sequence[int] = (),
) -> list[list[int]]:
    """Continue every prompt of a batch at once; return the new token ids of each (decoder models).

    The server's batch decoding (`run_batch`) without a server: prompts of different lengths are
    left-padded to the longest, with per-row positions and the padding hidden from attention, so
    rows equal `generate_tokens` of each prompt alone (up to float rounding in the batched
    matmuls). Each row samples with its own generator seeded by cfg.seed, so a seeded row draws
    what its prompt alone draws. A row stops before any id in `stop_ids`, the others go on; every
    row shares the longest prompt's context limit (one KV cache holds them all).
    """
    cfg.validate()
    mcfg = model_config(model)
    if mcfg.kind != "decoder":
        raise LmforgeError(
            f"batched generation is for decoder models; this model is a {mcfg.kind} "
            "(use generate_tokens, one prompt at a time)"
        )
    if not prompts_ids:
        return []
    lengths = [len(p) for p in prompts_ids]
    if min(lengths) == 0:
        raise LmforgeError("a prompt of the batch is empty: give at least one token per prompt")
    n = max(lengths)
    if n > mcfg.block_size:
        raise LmforgeError(
            f"a prompt is {n} tokens, longer than the model's context of "
            f"{mcfg.block_size} tokens (model.block_size); shorten the prompt"
        )
    budget = token_budget(cfg.max_new_tokens, n, mcfg.block_size)
    rows = [Row(list(p), cfg, set(stop_ids), None, budget) for p in prompts_ids]
    if len(rows) == 1 or not batchable(model):
        for row in rows:
            run_alone(model, row)
    else:
        run_batch(model, rows)
    return [row.wait().token_ids for row in rows]


class Batcher:
    """One model's scheduler: rows are submitted from request threads and decoded in batches on
    the batcher's own thread, under the model's lock (which logprob scoring also takes)."""

    def __init__(self, model: torch.nn.Module, lock: threading.Lock, max_batch: Callable[[], int]) -> None:
        self.model, self.lock, self.max_batch = model, lock, max_batch
        self.block_size = model_config(model).block_size
        self.waiting: list[Row] = []
        self.cond = threading.Condition()
        self.sizes: Counter[int] = Counter()  # batch size -> batches run at that size
        self.thread = threading.Thread(target=self._loop, name="lmforge-batcher", daemon=True)
        self.thread.start()

    def submit(self, row: Row) -> Row:
        with self.cond:
            self.waiting.append(row)
            self.cond.notify()
        return row

    def _next_batch(self) -> list[Row]:
        """The waiting rows for one batch, in arrival order; those that do not fit wait on, first."""
        batch, rest = [], []
        for row in self.waiting:
            try:
                if row.cancelled is not None and row.cancelled():
                    row.end("cancelled")  # the client left while waiting
                    continue
            except Exception as e:  # noqa: BLE001 -- a failing callback ends its own row
                row.fail(e)
                continue
            if len(batch) < self.max_batch() and fits(batch + [row], self.block_size):
                batch.append(row)
            else:
                rest.append(row)
        self.waiting = rest
        return batch

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.waiting:
                    self.cond.wait()
            with self.lock:  # the batch is taken once the model is free: all that waited meanwhile
                with self.cond:
                    batch = self._next_batch()
                if not batch:
                    continue
                self.sizes[len(batch)] += 1
                # OpenMP's thread count is per OS thread (see ServedModel.complete).
                torch.set_num_threads(torch.get_num_threads())
                try:
                    if len(batch) == 1:
                        run_alone(self.model, batch[0])
                    else:
                        run_batch(self.model, batch)
                except Exception as e:  # noqa: BLE001 -- a shared step failed: raised in each request's thread
                    for row in batch:
                        row.fail(e)  # rows already answered keep their answer
