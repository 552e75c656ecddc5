"""Per-token surprise: each token's loss in bits, -log2 p(token | what the model saw), with the
model's top-k predictions at that position (what it expected instead)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lmforge.inspect.inputs import Reading, predictions, read, token_label


@dataclass
class TokenSurprise:
    token: str  # the token's label
    bits: float  # -log2 p(token)
    prob: float  # p(token)
    top: list[tuple[str, float]]  # the k most likely tokens at this position, with probabilities


@dataclass
class Surprise:
    kind: str
    tokens: list[TokenSurprise]

    @property
    def mean_bits(self) -> float:
        return sum(t.bits for t in self.tokens) / len(self.tokens)

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "mean_bits": round(self.mean_bits, 5),
            "tokens": [
                {
                    "token": t.token,
                    "bits": round(t.bits, 5),
                    "prob": round(t.prob, 6),
                    "top": [{"token": s, "prob": round(p, 6)} for s, p in t.top],
                }
                for t in self.tokens
            ],
        }


@torch.no_grad()
def token_surprise(model: torch.nn.Module, tokenizer, text: str | Reading, top_k: int = 5) -> Surprise:
    """The surprise of every token of `text` (see inputs.py for how each model kind predicts it)."""
    reading = text if isinstance(text, Reading) else read(model, tokenizer, text)
    logp = torch.log_softmax(predictions(model, reading, tokenizer.mask_id), dim=-1)  # (n, V)
    target = torch.tensor(reading.ids, device=logp.device)
    chosen = logp[torch.arange(len(reading.ids)), target]  # (n,) natural log
    best = logp.topk(min(top_k, logp.shape[-1]), dim=-1)
    out = []
    for i, label in enumerate(reading.tokens):
        top = [
            (token_label(tokenizer, int(j)), math.exp(float(lp)))
            for lp, j in zip(best.values[i], best.indices[i])
        ]
        out.append(TokenSurprise(label, -float(chosen[i]) / math.log(2), math.exp(float(chosen[i])), top))
    return Surprise(reading.kind, out)
