"""The two losses, as sums: the trainer divides them by the counts of the whole (accumulated) batch.

Returning sums, not means, makes the loss of an optimizer step independent of how it is split into
micro-batches (gradient accumulation) and processes (data parallel): the critique loss is the mean over
every critique token of the step, the reward loss the mean over every pair of the step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_losses(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None) -> torch.Tensor:
    """Per comparison: −log σ(r⁺ − r⁻ − m). A margin m > 0 asks the chosen reward to win by at least m."""
    difference = chosen - rejected
    if margin is not None:
        difference = difference - margin
    return -F.logsigmoid(difference)


def centering_losses(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Per comparison: (r⁺ + r⁻)², which keeps rewards centred on zero (Eisenstein et al., 2023; TRL)."""
    return (chosen + rejected) ** 2


def critique_loss_sum(logits: torch.Tensor | None, targets: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy at the critique positions only (logits were computed there only)."""
    if logits is None or targets.numel() == 0:
        # Keep the LM head in the graph when present (DDP expects every trainable parameter to get a gradient).
        return logits.sum() * 0.0 if logits is not None else torch.zeros((), device=targets.device)
    return F.cross_entropy(logits.float(), targets.to(logits.device), reduction="sum")


def reward_loss_sums(rewards: torch.Tensor, chosen_index: torch.Tensor, rejected_index: torch.Tensor,
                     weights: torch.Tensor, margins: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Weighted sums over the comparisons of a batch: BT loss, centering, accuracy and margin.

    `weights` give each pair a total weight of 1 however many critique comparisons it has, so a pair
    with many critiques does not count more than a pair with one.
    """
    device = rewards.device
    chosen = rewards[chosen_index.to(device)]
    rejected = rewards[rejected_index.to(device)]
    weights = weights.to(device)
    margin = margins.to(device) if margins is not None else None
    difference = (chosen - rejected).detach()
    return {
        "reward_loss": (bradley_terry_losses(chosen, rejected, margin) * weights).sum(),
        "center_loss": (centering_losses(chosen, rejected) * weights).sum(),
        "accuracy": (((difference > 0).float() + 0.5 * (difference == 0).float()) * weights).sum(),
        "margin": (difference * weights).sum(),
    }
