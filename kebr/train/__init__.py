"""KEBR training: pretraining on masked sentiment words, fine-tuning and evaluation (spec 5, 6)."""

from kebr.train.finetune import finetune
from kebr.train.pretrain import pretrain

__all__ = ["pretrain", "finetune"]
