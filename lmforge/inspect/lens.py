"""The logit lens (nostalgebraist 2020, "interpreting GPT: the logit lens"): read every layer's
residual stream through the model's own final norm and output head, as if the model stopped
there. Row 0 is the embeddings (before any block); the last row is the model's real output.

For each layer and position: the top token with its probability, and the probability of the
token that actually comes next (for an encoder, of the masked token itself).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lmforge.inspect.inputs import Reading, masked_copies, read, token_label


@dataclass
class Lens:
    kind: str
    layers: list[str]  # "embed", "block 0", ...
    tokens: list[str]  # the text's tokens (the targets)
    inputs: list[str]  # what each position reads (decoder: the previous token)
    top: list[list[str]]  # [layer][position] the top token
    top_prob: np.ndarray  # (L+1, n) its probability
    target_prob: np.ndarray  # (L+1, n) probability of the actual token

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "layers": self.layers,
            "tokens": self.tokens,
            "inputs": self.inputs,
            "top": self.top,
            "top_prob": np.round(self.top_prob, 6).tolist(),
            "target_prob": np.round(self.target_prob, 6).tolist(),
        }


@torch.no_grad()
def residual_streams(model: torch.nn.Module, feed: dict) -> list[torch.Tensor]:
    """The main stack's residual stream (B, T, C) before the first block and after each block."""
    blocks = model.blocks
    streams: list[torch.Tensor] = []
    hooks = [blocks[0].register_forward_pre_hook(lambda m, args: streams.append(args[0]))]
    hooks += [b.register_forward_hook(lambda m, args, out: streams.append(out)) for b in blocks]
    try:
        model(**feed)
    finally:
        for h in hooks:
            h.remove()
    return streams[-(len(blocks) + 1) :]  # an encoder-decoder's encoder has its own blocks


@torch.no_grad()
def logit_lens(model: torch.nn.Module, tokenizer, text: str | Reading) -> Lens:
    reading = text if isinstance(text, Reading) else read(model, tokenizer, text)
    n = len(reading.ids)
    if reading.kind == "encoder":  # copy i has token i masked; read position i of copy i
        streams = residual_streams(model, {"input_ids": masked_copies(reading, tokenizer.mask_id)})
        rows = [s[torch.arange(n), torch.arange(n)] for s in streams]  # (n, C) each
    else:
        streams = residual_streams(model, reading.feed)
        rows = [s[0, reading.predicted_at] for s in streams]
    target = torch.tensor(reading.ids, device=rows[0].device)
    top, top_prob, target_prob = [], [], []
    for h in rows:
        probs = torch.softmax(model.logits(model.norm_f(h)).float(), dim=-1)  # (n, V)
        p, j = probs.max(dim=-1)
        top.append([token_label(tokenizer, int(t)) for t in j])
        top_prob.append(p.cpu().numpy())
        target_prob.append(probs[torch.arange(n), target].cpu().numpy())
    inputs = reading.labels[:n] if reading.kind != "encoder" else ["<mask>"] * n
    return Lens(
        reading.kind,
        ["embed"] + [f"block {i}" for i in range(len(rows) - 1)],
        reading.tokens,
        inputs,
        top,
        np.stack(top_prob),
        np.stack(target_prob),
    )
