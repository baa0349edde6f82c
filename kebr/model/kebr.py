"""KEBR: language model -> TCMF -> regression head (spec 3, 5, 6).

One model class serves both stages. Pretraining (``mask_index`` given) predicts the masked word's
sentiment from X_K at the mask token with ``pretrain_head``; fine-tuning (``mask_index=None``)
predicts the clip's sentiment from the mean of X_K over tokens with ``finetune_head``. The two heads
are separate so that fine-tuning starts from the pretrained LM + TCMF with a fresh head
(``load_pretrained``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from kebr.model.encoder import TextEncoder
from kebr.model.heads import RegressionHead, gather_at, masked_mean
from kebr.model.tcmf import TCMF


@dataclass
class KEBRConfig:
    """Every architectural choice, saved with each checkpoint.

    residual: "layernorm" is the paper's Eq. 7 (R = LN); "identity" is the reference code.
    mask_padding: keep padded audio/video frames out of the attention (the reference did not). Which
        text positions the MCC sees is a training setting (``mcc.text_positions``, kebr/train/loop.py).
    text_query: False is ablation C3 "no TCMF" (see kebr/model/tcmf.py for the reading).
    masked_mean: fine-tuning pools over real tokens only; False averages over padding (reference).
    freeze_text: the LM gets no gradients (reference pretraining).
    text_only: no TCMF at all: the head reads the LM's own states and the audio and video inputs are
        ignored (variant ``text_only``, the text-only baseline every multimodal sentiment paper compares
        against; not one of the paper's ablations).
    fusion_gate: the head reads X_0 + gate * (TCMF(X_0) - X_0) with a learned scalar gate, zero at
        initialisation (neither the paper nor the reference has it); the MCC takes TCMF's own X_K unless
        ``mcc.sequence`` says ``gated``. An untrained gated model is its LM alone; see
        docs/benchmarks.md "KEBR against text only" for what it changes. Off here, so that a
        KEBRConfig is the paper's network unless asked (and a run recorded before the key existed loads
        as it trained); the pipeline's config turns it on by default (kebr/schemas/config.schema.yaml),
        and both recipes pin it off.
    """

    d_audio: int
    d_video: int
    text_model: str = "bundled"
    d_embed: int = 256
    num_layers: int = 4
    dropout: float = 0.5
    share_weights: bool = True
    residual: str = "layernorm"
    mask_padding: bool = True
    text_query: bool = True
    masked_mean: bool = True
    freeze_text: bool = False
    head_hidden: int = 256
    text_only: bool = False
    fusion_gate: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "KEBRConfig":
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown KEBR config keys: {sorted(unknown)}")
        return cls(**values)


class KEBR(nn.Module):
    def __init__(self, config: KEBRConfig) -> None:
        super().__init__()
        self.config = config
        self.text = TextEncoder(config.text_model, freeze=config.freeze_text)
        d_text = self.text.hidden_size
        self.tcmf = None if config.text_only else TCMF(
            d_text,
            config.d_audio,
            config.d_video,
            d_embed=config.d_embed,
            num_layers=config.num_layers,
            dropout=config.dropout,
            share_weights=config.share_weights,
            residual=config.residual,
            mask_padding=config.mask_padding,
            text_query=config.text_query,
        )
        # A learned scalar, zero at initialisation: fused = X_0 + gate * (X_K - X_0), so the model starts
        # as its LM alone and takes in TCMF's change only as far as training finds it helps.
        self.fusion_gate = nn.Parameter(torch.zeros(())) if config.fusion_gate and self.tcmf is not None else None
        self.pretrain_head = RegressionHead(d_text, config.head_hidden, config.dropout)
        self.finetune_head = RegressionHead(d_text, config.head_hidden, config.dropout)

    @classmethod
    def from_config(cls, config: KEBRConfig | dict) -> "KEBR":
        """Build from a config or its ``to_dict()`` (as stored in a checkpoint)."""
        return cls(config if isinstance(config, KEBRConfig) else KEBRConfig.from_dict(config))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        audio: torch.Tensor,
        audio_mask: torch.Tensor | None,
        video: torch.Tensor,
        video_mask: torch.Tensor | None,
        mask_index: torch.Tensor | None = None,
        text_hidden: torch.Tensor | None = None,
        mcc_sequence: str = "tcmf",
        mcc_trains_lm: bool = True,
    ) -> dict[str, torch.Tensor]:
        """input_ids, attention_mask (B, L); audio (B, T_a, d_a), video (B, T_v, d_v) with bool masks
        (B, T) True = valid frame; mask_index (B,) for pretraining, None for fine-tuning;
        ``text_hidden`` (B, L, d_t): the frozen LM's states of ``input_ids`` computed beforehand
        (kebr/train/lm_cache.py), in which case the LM is not run.

        Returns fused (B, L, d_t), what the head reads: X_K, or with ``fusion_gate`` X_0 + gate (X_K - X_0);
        mcc_input (B, L, d_t), the sequence the MCC takes (training settings ``mcc.sequence``: X_K itself,
        TCMF's own output, or the gated ``fused``; with ``mcc_trains_lm`` False and a trainable LM, the
        same from a second TCMF pass over the LM's states with their gradient stopped, so the MCC trains
        the fusion and not the LM); pooled (B, d_t), prediction (B,). With ``text_only`` there is no
        fusion: fused and mcc_input are the LM's states themselves, and audio and video are not read.
        """
        if text_hidden is None:
            text_hidden = self.text(input_ids, attention_mask)
        x_k, fused = self._fuse(text_hidden, audio, video, audio_mask, video_mask)
        mcc_x_k, mcc_fused = x_k, fused
        if not mcc_trains_lm and self.tcmf is not None and text_hidden.requires_grad:
            mcc_x_k, mcc_fused = self._fuse(text_hidden.detach(), audio, video, audio_mask, video_mask)
        mcc_input = mcc_x_k if mcc_sequence == "tcmf" else mcc_fused
        if mask_index is not None:
            pooled = gather_at(fused, mask_index)
            prediction = self.pretrain_head(pooled)
        else:
            pooled = masked_mean(fused, attention_mask, use_mask=self.config.masked_mean)
            prediction = self.finetune_head(pooled)
        return {"fused": fused, "mcc_input": mcc_input, "pooled": pooled, "prediction": prediction}

    def _fuse(self, text_hidden: torch.Tensor, audio: torch.Tensor, video: torch.Tensor,
              audio_mask: torch.Tensor | None, video_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(X_K, what the head reads): TCMF's output, and with the gate X_0 + gate (X_K - X_0)."""
        if self.tcmf is None:
            return text_hidden, text_hidden
        x_k = self.tcmf(text_hidden, audio, video, audio_mask, video_mask)
        if self.fusion_gate is None:
            return x_k, x_k
        return x_k, text_hidden + self.fusion_gate * (x_k - text_hidden)

    def param_groups(self, lr_backbone: float, lr_head: float) -> list[dict]:
        """Adam parameter groups: LM (when trainable) + TCMF at ``lr_backbone``, heads at ``lr_head``
        (spec 6: 5e-6 and 1e-4 in fine-tuning; pretraining uses 1e-4 for both)."""
        fusion = [] if self.tcmf is None else [*self.tcmf.parameters()]
        fusion += [] if self.fusion_gate is None else [self.fusion_gate]
        backbone = [p for p in [*self.text.parameters(), *fusion] if p.requires_grad]
        heads = [*self.pretrain_head.parameters(), *self.finetune_head.parameters()]
        return [{"params": backbone, "lr": lr_backbone}, {"params": heads, "lr": lr_head}]

    def load_pretrained(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load a pretraining checkpoint's LM, TCMF and pretraining head, keeping this model's own
        freshly initialised fine-tuning head (so each fine-tuning seed gets its own new head)."""
        own_head = "finetune_head."
        kept = {k: v for k, v in state_dict.items() if not k.startswith(own_head)}
        missing, unexpected = self.load_state_dict(kept, strict=False)
        missing = [k for k in missing if not k.startswith(own_head)]
        if missing or unexpected:
            raise ValueError(f"checkpoint does not match the model: missing {missing}, unexpected {unexpected}")
