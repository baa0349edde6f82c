"""Multimodal cosine constraint (MCC), KEBR paper section 3.4 and KEBR-SPEC.md section 4.

MCC is model-agnostic: it looks only at three tensors, the fused text representation a model produced
and the two non-verbal inputs that went into it, and needs nothing from the model itself. To use it with
any model, keep the fused output and the raw audio/visual inputs of a batch and add the loss:

    mcc = MCCLoss(g=0.2, variant="paper", weight=1.0, scale=1.0)
    fused = model(text, audio, video)                 # (B, L, d_t)
    loss = task_loss + mcc(fused, audio, video)       # weight * mean over the batch of f

``mcc.per_sample(*modality_cosines(fused, audio, video))`` gives the unweighted per-sample loss f for
logging. The loss pulls the cosine between the fused sequence and each non-verbal sequence towards a
common value (1/2 - g when both cosines agree), so neither modality dominates the fusion.

Variants (``MCCLoss``): ``paper`` is Eq. 11-12 read literally (spec section 4: the cosine of the mean
angle, g added after the exponential factor, the scale s); ``reference`` is the released code, whose
pretraining and fine-tuning scripts use two different forms, picked by ``stage``. Until issue 15 the
``paper`` variant computed |cos(pi * ((cos_a + cos_v) / 2 + g) * exp(|dtheta| / 2))|, an earlier spec's
reading that is neither the paper (mean of the cosines, not cosine of the mean angle; g inside the
product) nor the code (|dtheta|, not |cos_a - cos_v|); it is gone, not kept as a third variant.

How the cosine of sequences of different sizes is taken (the reference's recipe): flatten each
sample, L2-normalise each flattened vector, repeat a shorter one floor(n_max / n) times, zero-pad
everything to n_max (the longest of the three), take the cosine.

Masks (optional, (B, T) with 1/True on real positions): padded positions are set to zero before
flattening, so padding contributes nothing to norms or dot products. The tensors keep their padded
layout, so the repeat period is still the padded length. Without masks the whole padded tensors are
flattened, which is exactly what the reference does.

An absent modality (a labelled test clip kept with no face or no audio track: zero frames, an
all-false mask, all-zero features) has no direction. Its cosine with anything is DEFINED AS 0: the
normalisation leaves a zero vector zero (``F.normalize`` divides by max(norm, eps)) and the cosine of
a zero vector is 0, with finite gradients for the fused input. So such a sample is scored as if the
fusion were orthogonal to that modality; only valid and test clips are ever kept this way (training
clips lacking a modality are skipped), so it never steers training (tests/test_missing_modality.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

VARIANTS = ("paper", "reference")
STAGES = ("pretrain", "finetune")

# arccos has an infinite derivative at +-1; a cosine of exactly 1 (e.g. a sample whose fused features
# equal its audio features) would turn the backward pass into inf * 0 = nan. Clamping keeps it finite.
ARCCOS_EPS = 1e-6


def _flatten_normalised(x: Tensor, mask: Tensor | None, name: str) -> Tensor:
    """(B, T, d) -> (B, T*d), padded positions zeroed, each row of unit L2 norm."""
    if x.dim() != 3:
        raise ValueError(f"{name} must be (B, T, d), got shape {tuple(x.shape)}")
    if mask is not None:
        if tuple(mask.shape) != tuple(x.shape[:2]):
            raise ValueError(f"{name} mask must be {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
        x = x * mask.unsqueeze(-1).to(x.dtype)
    # Dot products over tens of thousands of elements lose too much precision in half precision.
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return F.normalize(x.reshape(x.shape[0], -1), dim=1)


def _tile_and_pad(x: Tensor, n_max: int) -> Tensor:
    """Repeat each row floor(n_max / n) times, then zero-pad it to n_max."""
    n = x.shape[1]
    x = x.repeat(1, n_max // n)
    return F.pad(x, (0, n_max - x.shape[1]))


def modality_cosines(
    fused: Tensor,
    audio: Tensor,
    video: Tensor,
    fused_mask: Tensor | None = None,
    audio_mask: Tensor | None = None,
    video_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-sample cosines (cos_a, cos_v), each (B,), between the flattened fused sequence and the
    flattened audio / visual sequences. fused (B, L, d_t), audio (B, T_a, d_a), video (B, T_v, d_v).

    Vectorised over the batch: every sample of a padded batch has the same flattened lengths, so the
    reference's per-sample repeat/pad is the same operation on every row.
    """
    if not fused.shape[0] == audio.shape[0] == video.shape[0]:
        raise ValueError(
            f"batch sizes differ: fused {fused.shape[0]}, audio {audio.shape[0]}, video {video.shape[0]}"
        )
    flat = [
        _flatten_normalised(fused, fused_mask, "fused"),
        _flatten_normalised(audio, audio_mask, "audio"),
        _flatten_normalised(video, video_mask, "video"),
    ]
    n_max = max(x.shape[1] for x in flat)
    f, a, v = (_tile_and_pad(x, n_max) for x in flat)
    return F.cosine_similarity(f, a, dim=1), F.cosine_similarity(f, v, dim=1)


def reference_modality_cosines(fused: Tensor, audio: Tensor, video: Tensor) -> tuple[Tensor, Tensor]:
    """The reference's per-sample Python loop, re-implemented on purpose independently of
    ``modality_cosines`` so that it can serve as its oracle (parity tests) and as the benchmark
    baseline. Same numbers, one sample at a time."""
    cos_a, cos_v = [], []
    for i in range(fused.shape[0]):
        vectors = [F.normalize(x[i].flatten(), dim=0) for x in (fused, audio, video)]
        n_max = max(len(x) for x in vectors)
        padded = []
        for x in vectors:
            x = torch.cat([x] * (n_max // len(x)))
            padded.append(torch.cat([x, x.new_zeros(n_max - len(x))]))
        f, a, v = padded
        cos_a.append(F.cosine_similarity(f, a, dim=0))
        cos_v.append(F.cosine_similarity(f, v, dim=0))
    return torch.stack(cos_a), torch.stack(cos_v)


def _arccos(x: Tensor) -> Tensor:
    return torch.arccos(x.clamp(-1 + ARCCOS_EPS, 1 - ARCCOS_EPS))


class MCCLoss(torch.nn.Module):
    """L_mcc = weight * mean over the batch of f(cos_a, cos_v) (Eq. 10), KEBR-SPEC.md section 4.

    Write theta_m = arccos cos_m, dtheta = theta_a - theta_v, s = ``scale``, g the angle penalty.
    Every form gives dissimilar samples (a negative cosine) the large loss s * (1 + |cos_a| + |cos_v|),
    except the reference's pretraining form, which looks at the mean cosine only.

    variant "paper", either stage: the paper read literally (Eq. 11-12):
        y = cos((theta_a + theta_v) / 2)                        the cosine of the MEAN ANGLE (Eq. 12)
        f = s * |cos(pi * (y * exp(|dtheta| / 2) + g))|         g added AFTER the exponential factor
    variant "reference", the released code's two forms (the stage picks which):
        finetune (main.py): f = s * |cos(pi * ((cos_a + cos_v) / 2 + g) * exp(|cos_a - cos_v| / 2))|
        pretrain (pretrain.py): c = (cos_a + cos_v) / 2; f = s * |cos(pi * (c + g))| if c >= 0 else s * (1 - c)
    The code has no s (s = 1 there). With cos_a = cos_v = c every similar-branch form is the converged
    Eq. 13, s * |cos(pi * (c + g))|, zero at c = 1/2 - g. ``weight`` is lambda in L = L_task + lambda L_mcc
    (the paper's Eq. 17 has lambda = 1); s and lambda multiply the same term, s is kept as the paper's.
    """

    def __init__(
        self,
        g: float = 0.2,
        variant: str = "paper",
        stage: str = "finetune",
        weight: float = 1.0,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"mcc variant must be one of {VARIANTS}, got {variant!r}")
        if stage not in STAGES:
            raise ValueError(f"mcc stage must be one of {STAGES}, got {stage!r}")
        if not math.isfinite(g):
            raise ValueError(f"mcc g must be finite, got {g}")
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"mcc weight must be finite and >= 0, got {weight}")
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"mcc scale must be finite and > 0, got {scale}")
        self.g = float(g)
        self.variant = variant
        self.stage = stage
        self.weight = float(weight)
        self.scale = float(scale)

    def extra_repr(self) -> str:
        return f"g={self.g}, variant={self.variant}, stage={self.stage}, weight={self.weight}, scale={self.scale}"

    def per_sample(self, cos_a: Tensor, cos_v: Tensor) -> Tensor:
        """Unweighted per-sample loss f, (B,) (includes the scale s, not the weight)."""
        mean_cos = (cos_a + cos_v) / 2  # both reference forms; the paper's averages angles instead
        if self.variant == "reference" and self.stage == "pretrain":
            near = torch.cos(math.pi * (mean_cos + self.g)).abs()
            return self.scale * torch.where(mean_cos >= 0, near, 1 - mean_cos)
        if self.variant == "paper":
            theta_a, theta_v = _arccos(cos_a), _arccos(cos_v)
            y = torch.cos((theta_a + theta_v) / 2)
            similar = torch.cos(math.pi * (y * torch.exp((theta_a - theta_v).abs() / 2) + self.g)).abs()
        else:
            similar = torch.cos(math.pi * (mean_cos + self.g) * torch.exp((cos_a - cos_v).abs() / 2)).abs()
        dissimilar = 1 + cos_a.abs() + cos_v.abs()
        return self.scale * torch.where((cos_a >= 0) & (cos_v >= 0), similar, dissimilar)

    def forward(
        self,
        fused: Tensor,
        audio: Tensor,
        video: Tensor,
        *,
        fused_mask: Tensor | None = None,
        audio_mask: Tensor | None = None,
        video_mask: Tensor | None = None,
    ) -> Tensor:
        cos_a, cos_v = modality_cosines(fused, audio, video, fused_mask, audio_mask, video_mask)
        return self.weight * self.per_sample(cos_a, cos_v).mean()
