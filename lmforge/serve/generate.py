"""Text generation with a KV cache: stop strings, streaming; sampling is lmforge/serve/sampling.py.

Two layers, one prompt at a time, and a batched prefill:

- `generate_tokens` yields token ids. The prompt goes through the model in one forward (prefill)
  that fills the KV cache; every later token costs a forward over one position (the model's own
  cached forward; with `cfg.compile`, through torch.compile: `DecodeStep`, lmforge/model/decode.py).
- `prefill_batch` starts a batch of prompts at once (decoder models): prompts of different
  lengths are left-padded, so each step is one forward over B positions. The server's batcher
  (lmforge/serve/batching.py, also `generate_batch` there) decodes with it, sampling each row
  with its own settings and generator.
- `generate` turns them into text: it decodes incrementally, cuts at stop strings and streams
  the new text to a callback.

Context limit: generation stops when the sequence reaches the model's `block_size`, for every
positional encoding (rope and alibi could run longer, but were never trained past it); the last
token may sit at position `block_size`, since it is sampled but never fed back. A prompt longer
than `block_size` is an error, not silently truncated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from lmforge.errors import LmforgeError
from lmforge.model.config import ModelConfig
from lmforge.model.decode import DecodeStep
from lmforge.serve.config import SampleConfig
from lmforge.serve.sampling import cache_slots, sample, token_budget

REPLACEMENT = "\ufffd"  # what decode() gives for an incomplete UTF-8 sequence


def model_config(model: torch.nn.Module) -> ModelConfig:
    """The ModelConfig a Transformer was built from."""
    for name in ("cfg", "config"):
        cfg = getattr(model, name, None)
        if isinstance(cfg, ModelConfig):
            return cfg
    raise LmforgeError(f"{type(model).__name__} has no ModelConfig (expected a lmforge Transformer)")


def generate_tokens(
    model: torch.nn.Module,
    prompt_ids: Sequence[int],
    cfg: SampleConfig,
    stop_ids: Sequence[int] = (),
    source_ids: Sequence[int] | None = None,
) -> Iterator[int]:
    """Yield up to cfg.max_new_tokens sampled token ids that continue `prompt_ids`.

    Decoder models continue the prompt. Encoder-decoder models read `source_ids` with the encoder
    (once; the cross-attention keys/values stay in the cache) and continue the decoder prefix
    `prompt_ids`. Stops before yielding any id in `stop_ids`, or at the context limit. The model
    is in eval mode while the generator runs, and back in its previous mode once it ends.
    """
    cfg.validate()
    mcfg = model_config(model)
    if mcfg.kind == "encoder":
        raise LmforgeError(
            "an encoder-only model (model.kind=encoder) cannot generate text: it sees "
            "both directions and has no next-token head; use a decoder or encoder-decoder"
        )
    if mcfg.kind == "encoder-decoder":
        if not source_ids:
            raise LmforgeError(
                "an encoder-decoder model generates from a source text; give a non-empty source"
            )
        if len(source_ids) > mcfg.block_size:
            raise LmforgeError(
                f"the source is {len(source_ids)} tokens, longer than the model's context "
                f"of {mcfg.block_size} tokens (model.block_size); shorten the source"
            )
    elif source_ids is not None:
        raise LmforgeError(f"a source text is for encoder-decoder models; this model is a {mcfg.kind}")
    n = len(prompt_ids)
    if n == 0:
        raise LmforgeError("the prompt is empty: give at least one token")
    if n > mcfg.block_size:
        raise LmforgeError(
            f"the prompt is {n} tokens, longer than the model's context of "
            f"{mcfg.block_size} tokens (model.block_size); shorten the prompt"
        )
    budget = token_budget(cfg.max_new_tokens, n, mcfg.block_size)
    if budget <= 0:
        return
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    gen = seeded_generator(cfg.seed, device)
    stops = set(stop_ids)
    cache = None

    def next_logits(ids: list[int]) -> torch.Tensor:
        """Feed `ids` after what the cache holds; return the logits (V,) for the next token."""
        idx = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)
        if step is not None and cache.length > 0:  # one token after the prefill
            return step(idx[0])[0]
        if mcfg.kind == "encoder-decoder":
            first = cache.length == 0  # the encoder runs once, with the prefill
            src = torch.tensor([list(source_ids)], dtype=torch.long, device=device) if first else None
            logits, _ = model(src, decoder_input_ids=idx, kv_cache=cache, last_only=True)
        else:
            logits, _ = model(idx, kv_cache=cache, last_only=True)  # (1, 1, V)
        return logits[0, -1]

    was_training = model.training
    model.eval()
    try:
        # inference_mode only around model calls: a generator must not leave it switched on in
        # the caller's code between yields.
        with torch.inference_mode():
            cache = model.new_kv_cache(1, cache_slots(n, budget), device=device, dtype=dtype)
            compiled = DecodeStep.wanted(model, cfg.compile)
            step = DecodeStep(model, cache, compile=cfg.compile) if compiled else None
            token = int(sample(next_logits(list(prompt_ids)), cfg, gen))  # prefill: the whole prompt at once
        for i in range(budget):
            if token in stops:
                return
            yield token
            if i == budget - 1:
                return
            with torch.inference_mode():  # one context per token: forward and sampling together
                token = int(sample(next_logits([token]), cfg, gen))
    finally:
        model.train(was_training)


def prefill_batch(
    model: torch.nn.Module, prompts_ids: Sequence[Sequence[int]], max_len: int, compile: bool = False
) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """Run left-padded prompts through a decoder model into a fresh KV cache of `max_len` slots.

    Returns the next-token logits (B, V) and `step`, which feeds one token per row (B,) and
    returns the logits after it. Call it in eval mode and inside torch.inference_mode.
    """
    param = next(model.parameters())
    n = max(len(p) for p in prompts_ids)
    pad = [n - len(p) for p in prompts_ids]
    # Padding slots are hidden from every real query, so the id they hold does not matter: 0.
    ids = torch.tensor([[0] * k + list(p) for k, p in zip(pad, prompts_ids)], device=param.device)  # (B, n)
    cache = model.new_kv_cache(len(prompts_ids), max_len, device=param.device, dtype=param.dtype, pad=pad)
    logits = model(ids, kv_cache=cache, last_only=True)[0][:, -1]  # (B, V)
    if DecodeStep.wanted(model, compile):
        return logits, DecodeStep(model, cache, compile=compile)
    return logits, lambda tokens: model(tokens[:, None], kv_cache=cache, last_only=True)[0][:, -1]


def generate(
    model: torch.nn.Module,
    tokenizer,
    prompt: str,
    cfg: SampleConfig,
    on_text: Callable[[str], None] | None = None,
    *,
    source: str | None = None,
) -> str:
    """Continue `prompt` and return only the new text, cut before the first stop string.

    Ends at end-of-text (tokenizer.eot_id), at a stop string in cfg.stop, after
    cfg.max_new_tokens tokens, or at the model's context limit. `on_text` receives the new text
    in pieces as it is produced; the pieces concatenate to the return value. An empty prompt
    starts from the end-of-text token, i.e. the start of a fresh document.

    Encoder-decoder models need `source` (the encoder's input); the decoder starts from the
    end-of-text token, its start token in training (train/objectives.py), followed by `prompt`.
    """
    cfg.validate()
    if source is not None and model_config(model).kind == "encoder-decoder":
        prompt_ids = [tokenizer.eot_id] + tokenizer.encode(prompt)
        source_ids = tokenizer.encode(source)
    else:
        prompt_ids = tokenizer.encode(prompt) or [tokenizer.eot_id]
        source_ids = None if source is None else tokenizer.encode(source)
    return stream_text(model, tokenizer, prompt_ids, cfg, [tokenizer.eot_id], on_text, source_ids)


def stream_text(
    model: torch.nn.Module,
    tokenizer,
    prompt_ids: Sequence[int],
    cfg: SampleConfig,
    stop_ids: Sequence[int],
    on_text: Callable[[str], None] | None = None,
    source_ids: Sequence[int] | None = None,
) -> str:
    """Generate after `prompt_ids` and return the new text, streamed through `on_text` and cut at
    cfg.stop strings; the shared tail of `generate` and chat replies."""
    stream = TextStream(tokenizer, cfg.stop, on_text)
    tokens = generate_tokens(model, prompt_ids, cfg, stop_ids=stop_ids, source_ids=source_ids)
    try:
        for token in tokens:
            if stream.add(token):
                break
    finally:
        tokens.close()
    return stream.finish()


def seeded_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A torch.Generator on `device`: seeded for reproducible samples, or from OS entropy."""
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen


class TextStream:
    """Turns token ids into text pieces: never half a UTF-8 character, never past a stop string.

    Byte-level BPE can split one character's bytes over several tokens; their decoded text then
    ends in U+FFFD until the character is complete, so that tail is held back. Stop strings can
    span tokens too, so a tail that could still grow into a stop string is also held back.
    """

    def __init__(self, tokenizer, stop: Sequence[str], on_text: Callable[[str], None] | None):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.on_text = on_text
        self.text = ""  # settled text: complete characters, possibly ending in a stop string
        self.pending: list[int] = []  # tokens since the last complete character
        self.pending_chars = 0  # characters of decode(pending) already moved into self.text
        self.emitted = 0  # characters of self.text passed to on_text
        self.stopped_at: int | None = None  # index in self.text of the stop string, once seen

    def add(self, token: int) -> bool:
        """Take one token; True once a stop string has appeared (the caller should stop)."""
        self.pending.append(token)
        piece = self.tokenizer.decode(self.pending)
        boundary = not piece.endswith(REPLACEMENT)
        complete = piece if boundary else piece.rstrip(REPLACEMENT)
        self._settle(complete[self.pending_chars :])
        if boundary:  # the tokens so far end on a character boundary: start afresh
            self.pending, self.pending_chars = [], 0
        else:
            self.pending_chars = len(complete)
        return self.stopped_at is not None

    def finish(self) -> str:
        """Flush what was held back (incomplete characters stay as U+FFFD) and return the text."""
        if self.stopped_at is None and self.pending:
            self._settle(self.tokenizer.decode(self.pending)[self.pending_chars :])
            self.pending = []
        end = len(self.text) if self.stopped_at is None else self.stopped_at
        self._emit(end)
        return self.text[:end]

    def _settle(self, new: str) -> None:
        if not new or self.stopped_at is not None:
            return
        start = len(self.text)
        self.text += new
        longest = max((len(s) for s in self.stop), default=0)
        hits = [i for s in self.stop if (i := self.text.find(s, max(0, start - len(s) + 1))) >= 0]
        if hits:
            self.stopped_at = min(hits)
            self._emit(self.stopped_at)
            return
        self._emit(len(self.text) - self._stop_prefix_len(longest))

    def _stop_prefix_len(self, longest: int) -> int:
        """Length of the longest tail of the text that is the start of some stop string."""
        for k in range(min(longest - 1, len(self.text)), 0, -1):
            tail = self.text[-k:]
            if any(s.startswith(tail) for s in self.stop):
                return k
        return 0

    def _emit(self, end: int) -> None:
        if end > self.emitted:
            if self.on_text is not None:
                self.on_text(self.text[self.emitted : end])
            self.emitted = end
