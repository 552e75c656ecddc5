"""Token log-probabilities for the completions API's `logprobs` (OpenAI's legacy format).

`echo=True, logprobs=k, max_tokens=1` scores a prompt: what lm-evaluation-harness's
`local-completions` model sends for log-likelihoods, and what a perplexity filter needs. The
prompt and the generated tokens go through the model once more, teacher-forced, so the numbers
are those of the model's own distribution (before temperature, top-k or top-p), as OpenAI reports.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmforge.errors import LmforgeError


def token_logprobs(model: torch.nn.Module, ids: Sequence[int], top: int) -> tuple[list, list]:
    """(log P(ids[i] | ids[:i]) per position, the `top` likeliest ids there as {id: logprob});
    position 0 has no context and gets None in both."""
    if getattr(getattr(model, "cfg", None), "kind", "decoder") != "decoder":
        raise LmforgeError("logprobs need a decoder model")
    n = len(ids)
    if n < 2:
        return [None] * n, [None] * n
    device = next(model.parameters()).device
    with torch.inference_mode():
        logits, _ = model(torch.tensor([list(ids[:-1])], device=device))  # predicts ids[1:]
        lp = torch.log_softmax(logits[0].float(), dim=-1)  # (n-1, V)
        target = torch.tensor(list(ids[1:]), device=device)
        chosen = lp.gather(1, target[:, None])[:, 0].tolist()
        tops: list = [None] * (n - 1)
        if top > 0:
            vals, idx = lp.topk(top, dim=-1)
            tops = [dict(zip(i, v)) for i, v in zip(idx.tolist(), vals.tolist())]
    return [None, *chosen], [None, *tops]


def completion_logprobs(
    tokenizer, model: torch.nn.Module, prompt: Sequence[int], generated: Sequence[int], top: int, echo: bool
) -> dict:
    """The `logprobs` object of one completions choice: tokens as text, their log-probabilities,
    the top alternatives as {token text: logprob}, and each token's character offset in the
    choice's text. With `echo` the prompt's tokens come first."""
    ids = [*prompt, *generated]
    chosen, tops = token_logprobs(model, ids, top)
    start = 0 if echo else len(prompt)
    tokens = [tokenizer.decode([t]) for t in ids[start:]]
    offsets, pos = [], 0
    for t in tokens:
        offsets.append(pos)
        pos += len(t)
    top_text = [None if d is None else {tokenizer.decode([i]): v for i, v in d.items()} for d in tops[start:]]
    return {
        "tokens": tokens,
        "token_logprobs": chosen[start:],
        "top_logprobs": top_text if top > 0 else None,
        "text_offset": offsets,
    }
