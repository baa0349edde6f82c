"""The regression head and the two ways of pooling X_K into one vector per sample (spec 5, 6)."""

from __future__ import annotations

import torch
from torch import nn


class RegressionHead(nn.Module):
    """MLP d_in -> hidden -> ReLU -> Dropout -> 1: one sentiment score per sample."""

    def __init__(self, d_in: int, hidden: int = 256, dropout: float = 0.5) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d_in) -> (B,)."""
        return self.net(x).squeeze(-1)


def gather_at(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The row of each sample at its own position: x (B, L, d), index (B,) -> (B, d).

    Pretraining predicts the masked word's score from the fused vector at the mask token.
    """
    return x[torch.arange(x.shape[0], device=x.device), index]


def masked_mean(x: torch.Tensor, attention_mask: torch.Tensor, use_mask: bool = True) -> torch.Tensor:
    """Mean over tokens: x (B, L, d), attention_mask (B, L) 0/1 -> (B, d).

    ``use_mask=False`` averages over the padding too, as the reference fine-tuning did (parity).
    """
    if not use_mask:
        return x.mean(dim=1)
    weights = attention_mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
