"""Text-based cross-modal fusion, TCMF (paper 3.3, Eq. 2-8; spec section 3).

The text stream X (B, L, d_t) is the query; the raw audio and visual features X0_a (B, T_a, d_a) and
X0_v (B, T_v, d_v) are keys and values, fed unchanged to every layer. One layer:

    M   = CMA_a(X, X0_a) + CMA_v(X, X0_v) + R(X)      R = LayerNorm (paper Eq. 7) or identity (reference)
    X'  = Dropout(FFN(LN(M))) + M                     FFN = one Linear(d_t, d_t) (reference)

with CMA(X, X_m) = softmax(LN(X) W_Q (LN(X_m) W_K)^T / sqrt(d_e)) LN(X_m) W_V W_O, single head.

Padding. ``mask_padding=True`` keeps padded frames (mask False) out of the softmax; ``False``
reproduces the reference, which attended to the zero padding too. A sample whose modality has no valid
frame at all (no face found, no audio track) attends to nothing: its attention weights are all zero, so
that CMA adds only W_O's bias, the same constant for every sample, and no NaN appears.

Shared weights. The keys and values LN(X0_m) W_K, LN(X0_m) W_V depend only on the raw modality input
and the layer's weights, so with one shared layer they are the same in all K applications: TCMF
computes them once per forward (``CrossModalAttention.memory``) instead of K times. The output is the
same; gradients are the same sum, accumulated in one matrix product instead of K. With the frozen
LM's states cached (pretraining) these projections are a large part of what is left to compute.

Ablation C3, "no TCMF" (paper Table 4: "only removing the text-based part and retaining the overall
architecture of cross-modal fusion"). What makes the fusion text-based is that the text chooses, token
by token, which frames to inject (the text is the query). ``text_query=False`` removes exactly that
and keeps everything else: each CMA queries with one learned vector of size d_t (through the same
LN and W_Q) instead of the text, so it becomes attention pooling of the modality's frames, and the
pooled vector is added to every token alike. The layers, weights, residual, FFN and K repetitions are
unchanged, and the text still flows through R and the residual path, as the paper's C3 numbers (Corr
0.737 on MOSI, far above any non-verbal-only model) show it must.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class CrossModalAttention(nn.Module):
    """Single-head attention from the text stream (queries) to one non-verbal modality (keys, values)."""

    def __init__(
        self,
        d_text: int,
        d_modality: int,
        d_embed: int,
        mask_padding: bool = True,
        text_query: bool = True,
    ) -> None:
        super().__init__()
        self.mask_padding = mask_padding
        self.text_query = text_query
        self.norm_text = nn.LayerNorm(d_text)
        self.norm_modality = nn.LayerNorm(d_modality)
        self.w_q = nn.Linear(d_text, d_embed)
        self.w_k = nn.Linear(d_modality, d_embed)
        self.w_v = nn.Linear(d_modality, d_embed)
        self.w_o = nn.Linear(d_embed, d_text)
        # Ablation C3: a text-independent query (see the module docstring).
        self.query = None if text_query else nn.Parameter(torch.randn(d_text) * 0.02)

    def memory(self, modality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, T, d_e) of a modality: they do not depend on the text stream."""
        m = self.norm_modality(modality)
        return self.w_k(m), self.w_v(m)

    def forward(self, text: torch.Tensor, modality: torch.Tensor, mask: torch.Tensor | None,
                memory: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """text (B, L, d_t), modality (B, T, d_m), mask (B, T) bool True = valid -> (B, L, d_t);
        ``memory``: ``self.memory(modality)`` when the caller already has it.

        With ``text_query=False`` the result is (B, 1, d_t), which broadcasts over the L tokens.
        """
        query = text if self.query is None else self.query.expand(text.shape[0], 1, -1)
        q = self.w_q(self.norm_text(query))
        k, v = memory if memory is not None else self.memory(modality)
        scores = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])  # (B, L, T)
        if self.mask_padding and mask is not None:
            valid = mask[:, None, :]
            scores = scores.masked_fill(~valid, torch.finfo(scores.dtype).min)
            # A row with no valid key would be a uniform softmax over padding; zero it instead.
            weights = scores.softmax(dim=-1) * valid
        else:
            weights = scores.softmax(dim=-1)
        return self.w_o(weights @ v)


class TCMFLayer(nn.Module):
    """One TCMF layer (Eq. 7-8)."""

    def __init__(
        self,
        d_text: int,
        d_audio: int,
        d_video: int,
        d_embed: int = 256,
        dropout: float = 0.5,
        residual: str = "layernorm",
        mask_padding: bool = True,
        text_query: bool = True,
    ) -> None:
        super().__init__()
        if residual not in ("layernorm", "identity"):
            raise ValueError(f"residual must be 'layernorm' or 'identity', got {residual!r}")
        self.cma_audio = CrossModalAttention(d_text, d_audio, d_embed, mask_padding, text_query)
        self.cma_video = CrossModalAttention(d_text, d_video, d_embed, mask_padding, text_query)
        self.residual = nn.LayerNorm(d_text) if residual == "layernorm" else nn.Identity()
        self.norm = nn.LayerNorm(d_text)
        self.ffn = nn.Linear(d_text, d_text)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        audio: torch.Tensor,
        video: torch.Tensor,
        audio_mask: torch.Tensor | None,
        video_mask: torch.Tensor | None,
        memory: tuple | None = None,
    ) -> torch.Tensor:
        """``memory``: ``self.memory(audio, video)``, computed once when the layer is applied K times."""
        memory_a, memory_v = memory if memory is not None else (None, None)
        m = (self.cma_audio(x, audio, audio_mask, memory_a) + self.cma_video(x, video, video_mask, memory_v)
             + self.residual(x))
        return self.dropout(self.ffn(self.norm(m))) + m

    def memory(self, audio: torch.Tensor, video: torch.Tensor) -> tuple:
        return self.cma_audio.memory(audio), self.cma_video.memory(video)


class TCMF(nn.Module):
    """K TCMF layers. ``share_weights=True`` (reference, and the paper's "capacity ... remains
    unchanged") applies one layer's weights K times; ``False`` gives each layer its own weights."""

    def __init__(
        self,
        d_text: int,
        d_audio: int,
        d_video: int,
        d_embed: int = 256,
        num_layers: int = 4,
        dropout: float = 0.5,
        share_weights: bool = True,
        residual: str = "layernorm",
        mask_padding: bool = True,
        text_query: bool = True,
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.share_weights = share_weights
        n_distinct = 1 if share_weights else num_layers
        self.layers = nn.ModuleList(
            TCMFLayer(d_text, d_audio, d_video, d_embed, dropout, residual, mask_padding, text_query)
            for _ in range(n_distinct)
        )

    def forward(
        self,
        text_hidden: torch.Tensor,
        audio: torch.Tensor,
        video: torch.Tensor,
        audio_mask: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """X0_t (B, L, d_t), X0_a (B, T_a, d_a), X0_v (B, T_v, d_v), masks (B, T) bool True = valid
        (None = every frame valid) -> X_K (B, L, d_t)."""
        x = text_hidden
        memory = self.layers[0].memory(audio, video) if self.share_weights else None
        for k in range(self.num_layers):
            layer = self.layers[0 if self.share_weights else k]
            x = layer(x, audio, video, audio_mask, video_mask, memory)
        return x
