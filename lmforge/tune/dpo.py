"""The preference objective: Direct Preference Optimization and its variants.

DPO (Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a
Reward Model", Eq. 7) trains the policy pi on pairs (prompt x, chosen y_w, rejected y_l) against
a frozen reference pi_ref, with the implicit reward r(x, y) = beta * log(pi(y|x) / pi_ref(y|x)):

    sigmoid:  -log sigmoid(r(x, y_w) - r(x, y_l))
    cDPO:     the same with labels flipped with probability eps (label_smoothing; Mitchell 2023,
              "A note on DPO with noisy preferences"): -(1-eps) log s(d) - eps log s(-d)
    ipo:      (h - 1 / (2 beta))^2 with h the difference of the per-token average log-ratios
              (Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
              Preferences", Eq. 17; the per-token average is TRL's, agreed with the IPO authors)

log pi(y|x) is the sum of the log-probs of the response's tokens only (the assistant's content and
its closing <|end|> in lmforge's chat template): `sequence_logps` sums over targets != -100.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = -100


@dataclass
class PairScores:
    """Per pair (P,) figures of a batch: the loss and what the step metrics are made of."""

    loss: torch.Tensor  # differentiable
    chosen_logps: torch.Tensor  # log pi(y_w | x), summed over the response tokens
    rejected_logps: torch.Tensor
    chosen_rewards: torch.Tensor  # beta * (log pi - log pi_ref), detached
    rejected_rewards: torch.Tensor


def sequence_logps(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-probs (R,), counted tokens (R,)) of each row's targets other than -100, in fp32.
    logits (R, T, V) are the model's at the positions whose next token the targets (R, T) hold."""
    mask = targets != IGNORE
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)  # (R, T)
    return (picked * mask).sum(-1), mask.sum(-1)


def pair_losses(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    *,
    beta: float,
    loss: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_tokens: torch.Tensor | None = None,
    rejected_tokens: torch.Tensor | None = None,
) -> PairScores:
    """Each pair's loss from its summed log-probs under the policy and the reference (P,) each.
    The ipo loss needs the response lengths (chosen_tokens, rejected_tokens)."""
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    if loss == "sigmoid":
        d = beta * (chosen_ratio - rejected_ratio)
        per_pair = -F.logsigmoid(d) * (1 - label_smoothing) - F.logsigmoid(-d) * label_smoothing
    elif loss == "ipo":
        if chosen_tokens is None or rejected_tokens is None:
            raise ValueError("the ipo loss needs the response lengths")
        h = chosen_ratio / chosen_tokens.clamp_min(1) - rejected_ratio / rejected_tokens.clamp_min(1)
        per_pair = (h - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown preference loss {loss!r}")
    return PairScores(
        per_pair,
        policy_chosen.detach(),
        policy_rejected.detach(),
        beta * chosen_ratio.detach(),
        beta * rejected_ratio.detach(),
    )


def metric_sums(s: PairScores) -> dict[str, torch.Tensor]:
    """Sums over the batch's pairs of the per-step figures (the loop adds them over micro-batches
    and ranks and divides by the pairs): reward margin, preference accuracy (chosen reward strictly
    above the rejected one, as TRL counts it), rewards and log-probs of chosen and rejected."""
    return {
        "reward_margin": (s.chosen_rewards - s.rejected_rewards).sum(),
        "pref_accuracy": (s.chosen_rewards > s.rejected_rewards).float().sum(),
        "reward_chosen": s.chosen_rewards.sum(),
        "reward_rejected": s.rejected_rewards.sum(),
        "logp_chosen": s.chosen_logps.sum(),
        "logp_rejected": s.rejected_logps.sum(),
    }
