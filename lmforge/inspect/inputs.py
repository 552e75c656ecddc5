"""A text as each model kind reads it, shared by the attention maps, surprise and the lens.

decoder: the end-of-text token (the document boundary every training document follows), then the
text: position p predicts token p of the text, so even the first token has a prediction.
encoder-decoder: the text is the source, and the decoder reads the end-of-text start token (as in
training, lmforge/train/objectives.py) then the text, predicting token p at position p: the
teacher-forced reconstruction that BART-style denoising trains.
encoder (masked LM): the text as it is; a token's prediction comes from the text with that token
replaced by the mask token, one copy per token (pseudo-log-likelihood, Salazar et al. 2020).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmforge.errors import LmforgeError

START_LABEL = "<eot>"


def token_label(tokenizer, token_id: int) -> str:
    """A token as short visible text: special tokens by name, newlines and tabs escaped."""
    if token_id == tokenizer.eot_id:
        return START_LABEL
    text = tokenizer.decode([token_id])
    if text.startswith("<|") and text.endswith("|>") and token_id < 7:  # the other special tokens
        return f"<{text[2:-2]}>"
    text = text.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text) or "\u2205"


@dataclass
class Reading:
    """One text prepared for one model."""

    kind: str  # decoder | encoder | encoder-decoder
    ids: list[int]  # the text's tokens
    tokens: list[str]  # their labels
    labels: list[str]  # labels of the main stack's positions (decoder input, or the encoder's text)
    source_labels: list[str] | None  # the encoder's positions of an encoder-decoder
    feed: dict[str, torch.Tensor]  # model(**feed): batch of one

    @property
    def predicted_at(self) -> list[int]:
        """Position in the main stack whose output predicts text token i (i = 0..n-1)."""
        return list(range(len(self.ids)))


def read(model: torch.nn.Module, tokenizer, text: str) -> Reading:
    """Tokenize `text` for `model`; one clear error for empty or over-long text."""
    cfg = model.cfg
    ids = tokenizer.encode(text)
    if not ids:
        raise LmforgeError("the text to inspect is empty")
    longest = cfg.block_size - (0 if cfg.kind == "encoder" else 1)
    if len(ids) > longest:
        raise LmforgeError(
            f"the text is {len(ids)} tokens; this model reads at most {longest} "
            f"(model.block_size={cfg.block_size})"
        )
    device = next(model.parameters()).device
    tokens = [token_label(tokenizer, i) for i in ids]
    text_ids = torch.tensor([ids], device=device)
    with_start = torch.tensor([[tokenizer.eot_id] + ids], device=device)  # (1, n+1)
    if cfg.kind == "decoder":
        return Reading(cfg.kind, ids, tokens, [START_LABEL] + tokens, None, {"input_ids": with_start})
    if cfg.kind == "encoder":
        return Reading(cfg.kind, ids, tokens, tokens, None, {"input_ids": text_ids})
    return Reading(
        cfg.kind,
        ids,
        tokens,
        [START_LABEL] + tokens,
        tokens,
        {"input_ids": text_ids, "decoder_input_ids": with_start},
    )


def masked_copies(reading: Reading, mask_id: int) -> torch.Tensor:
    """(n, n) the encoder's input n times, copy i with token i masked."""
    ids = reading.feed["input_ids"]  # (1, n)
    n = ids.shape[1]
    copies = ids.repeat(n, 1)
    copies[torch.arange(n), torch.arange(n)] = mask_id
    return copies


@torch.no_grad()
def predictions(model: torch.nn.Module, reading: Reading, mask_id: int) -> torch.Tensor:
    """(n, V) float32 logits predicting each text token (masked in turn for an encoder)."""
    if reading.kind == "encoder":
        n = len(reading.ids)
        logits, _ = model(masked_copies(reading, mask_id))  # (n, n, V)
        return logits[torch.arange(n), torch.arange(n)].float()
    logits, _ = model(**reading.feed)  # (1, n+1, V)
    return logits[0, reading.predicted_at].float()
