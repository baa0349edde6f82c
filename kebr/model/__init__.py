"""The KEBR model: language model -> text-based cross-modal fusion (TCMF) -> regression head."""

from kebr.model.encoder import TextEncoder, resolve_text_model
from kebr.model.heads import RegressionHead, gather_at, masked_mean
from kebr.model.kebr import KEBR, KEBRConfig
from kebr.model.tcmf import TCMF, CrossModalAttention, TCMFLayer

__all__ = [
    "KEBR",
    "KEBRConfig",
    "TCMF",
    "TCMFLayer",
    "CrossModalAttention",
    "RegressionHead",
    "TextEncoder",
    "resolve_text_model",
    "gather_at",
    "masked_mean",
]
