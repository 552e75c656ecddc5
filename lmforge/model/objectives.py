"""Turn a batch of token windows into the inputs/targets each model kind trains on.

decoder: next-token prediction, x[:, :-1] -> x[:, 1:] (the loader already yields x, y).
encoder: masked LM (Devlin et al. 2019, BERT): hide ~15% of tokens, predict only those.
encoder-decoder: prefix -> continuation (Raffel et al. 2020, T5, sec. 3.3's "prefix LM" objective in
seq2seq form): the first half of the window is the source, the second half the target.
"""

from __future__ import annotations

import torch


def mask_tokens(ids: torch.Tensor, mask_id: int, vocab_size: int, prob: float = 0.15,
                generator: torch.Generator | None = None, keep_ids: tuple[int, ...] = ()
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: choose each position with probability `prob` (never one in `keep_ids`, e.g.
    special tokens); of those, 80% become mask_id, 10% a random token, 10% stay (BERT sec. 3.1).
    Returns (inputs, targets) with targets = -100 except at the chosen positions."""
    def draw() -> torch.Tensor:
        return torch.rand(ids.shape, generator=generator, device=ids.device)
    chosen = draw() < prob
    for t in keep_ids:
        chosen &= ids != t
    targets = torch.where(chosen, ids, torch.full_like(ids, -100))
    roll = draw()
    inputs = torch.where(chosen & (roll < 0.8), torch.full_like(ids, mask_id), ids)
    random_tokens = torch.randint(0, vocab_size, ids.shape, generator=generator, device=ids.device)
    inputs = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_tokens, inputs)
    return inputs, targets


def prefix_to_continuation(ids: torch.Tensor, start_id: int) -> dict[str, torch.Tensor]:
    """Split windows (B, T) into source = first T//2 tokens, target = the rest; the decoder reads
    the target shifted right behind `start_id` (teacher forcing). Returns model(**batch) kwargs."""
    half = ids.shape[1] // 2
    source, target = ids[:, :half], ids[:, half:]
    start = torch.full_like(target[:, :1], start_id)
    return {"input_ids": source, "decoder_input_ids": torch.cat([start, target[:, :-1]], dim=1),
            "targets": target}
