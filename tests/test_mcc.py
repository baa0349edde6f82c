"""MCC: hand-computed losses for every variant/stage/branch, the fixed point 1/2 - g, the vectorised
cosines against the reference's per-sample loop, masks, and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from kebr.mcc import MCCLoss, modality_cosines, reference_modality_cosines

PI = math.pi


def f_of(loss: MCCLoss, cos_a: float, cos_v: float) -> float:
    out = loss.per_sample(torch.tensor([cos_a], dtype=torch.float64), torch.tensor([cos_v], dtype=torch.float64))
    return out.item()


# ---------------------------------------------------------------- per-sample loss, by hand


def test_paper_form_read_literally():
    # Spec 4, Eq. 11-12: theta_a = pi/6 (cos_a = cos(pi/6) = 0.8660254), theta_v = pi/3 (cos_v = 0.5), g = 0.2.
    # y = cos(mean angle) = cos((pi/6 + pi/3) / 2) = cos(pi/4) = 0.7071068
    # |dtheta| = pi/6 -> exp(pi/12) = 1.2992659; y * 1.2992659 = 0.9187197; + g = 1.1187197
    # f = |cos(1.1187197 pi)| = cos(0.1187197 pi) = 0.9312496
    loss = MCCLoss(g=0.2, variant="paper")
    assert f_of(loss, math.cos(PI / 6), 0.5) == pytest.approx(0.9312496182, abs=1e-9)
    # The paper form does not depend on the stage.
    assert f_of(MCCLoss(g=0.2, variant="paper", stage="pretrain"), math.cos(PI / 6), 0.5) == pytest.approx(
        0.9312496182, abs=1e-9
    )
    # Not the earlier misreading, which added g inside the product:
    # |cos(pi (0.7071068 + 0.2) * 1.2992659)| = |cos(1.1786 pi)| = 0.8467218
    assert f_of(loss, math.cos(PI / 6), 0.5) != pytest.approx(0.8467217747, abs=1e-3)
    # ... nor the mean of the cosines: |cos(pi ((0.8660254 + 0.5) / 2 + 0.2) * 1.2992659)| = 0.8948698
    assert f_of(loss, math.cos(PI / 6), 0.5) != pytest.approx(0.8948698117, abs=1e-3)


def test_paper_form_second_point_and_scale():
    # cos_a = 0.5, cos_v = 0.1, g = 0.2: theta_a = arccos 0.5 = pi/3 = 1.0471976, theta_v = arccos 0.1 = 1.4706289
    # mean angle = 1.2589132, y = cos(1.2589132) = 0.3068514 (the mean cosine would be 0.3)
    # |dtheta| = 0.4234314 -> exp(0.2117157) = 1.2357965; y * 1.2357965 = 0.3792059; + 0.2 = 0.5792059
    # f = |cos(0.5792059 pi)| = sin(0.0792059 pi) = 0.2462728; with s = 2: 0.4925456
    assert f_of(MCCLoss(g=0.2, variant="paper"), 0.5, 0.1) == pytest.approx(0.2462728052, abs=1e-9)
    assert f_of(MCCLoss(g=0.2, variant="paper", scale=2.0), 0.5, 0.1) == pytest.approx(0.4925456105, abs=1e-9)
    # Symmetric in the two modalities: |dtheta| and the mean angle do not care which is which.
    assert f_of(MCCLoss(g=0.2, variant="paper"), 0.1, 0.5) == pytest.approx(0.2462728052, abs=1e-9)


def test_reference_finetune_form():
    # main.py: cos_a = cos(pi/6) = 0.8660254, cos_v = 0.5, g = 0.2
    # mean cosine 0.6830127, |cos_a - cos_v| = 0.3660254 -> exp(0.1830127) = 1.2008297
    # (0.6830127 + 0.2) * 1.2008297 = 1.0603478; f = |cos(1.0603478 pi)| = cos(0.0603478 pi) = 0.9820819
    loss = MCCLoss(g=0.2, variant="reference", stage="finetune")
    assert f_of(loss, math.cos(PI / 6), 0.5) == pytest.approx(0.9820818973, abs=1e-9)
    # cos_a = 0.5, cos_v = 0.1: mean 0.3, |0.4| -> exp(0.2) = 1.2214028; 0.5 * 1.2214028 = 0.6107014
    # f = |cos(0.6107014 pi)| = 0.3408103
    assert f_of(loss, 0.5, 0.1) == pytest.approx(0.3408102775, abs=1e-9)


def spec_f(variant: str, stage: str, cos_a: float, cos_v: float, g: float, s: float) -> float:
    """KEBR-SPEC.md section 4 transcribed one scalar at a time with math (no torch, no clamping)."""
    if variant == "reference" and stage == "pretrain":
        c = (cos_a + cos_v) / 2
        return s * abs(math.cos(math.pi * (c + g))) if c >= 0 else s * (1 - c)
    if cos_a < 0 or cos_v < 0:
        return s * (1 + abs(cos_a) + abs(cos_v))
    if variant == "paper":
        theta_a, theta_v = math.acos(cos_a), math.acos(cos_v)
        y = math.cos((theta_a + theta_v) / 2)
        return s * abs(math.cos(math.pi * (y * math.exp(abs(theta_a - theta_v) / 2) + g)))
    return s * abs(math.cos(math.pi * ((cos_a + cos_v) / 2 + g) * math.exp(abs(cos_a - cos_v) / 2)))


@pytest.mark.parametrize("variant,stage", [("paper", "finetune"), ("reference", "finetune"), ("reference", "pretrain")])
@pytest.mark.parametrize("g,s", [(0.2, 1.0), (0.25, 1.0), (0.4, 1.0), (-0.5, 1.0), (0.5, 3.0)])
def test_every_form_matches_the_spec_on_a_grid(variant, stage, g, s):
    # A grid over both branches (negatives included), away from +-1 where the arccos clamp acts.
    grid = [-0.9, -0.35, -0.05, 0.0, 0.07, 0.3, 0.5, 0.62, 0.8, 0.97]
    pairs = [(a, v) for a in grid for v in grid]
    cos_a = torch.tensor([a for a, _ in pairs], dtype=torch.float64)
    cos_v = torch.tensor([v for _, v in pairs], dtype=torch.float64)
    got = MCCLoss(g=g, variant=variant, stage=stage, scale=s).per_sample(cos_a, cos_v)
    want = torch.tensor([spec_f(variant, stage, a, v, g, s) for a, v in pairs], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-9)


@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_one_cosine_negative_is_the_large_loss(variant):
    # cos_a = -0.2 < 0 -> f = s * (1 + |-0.2| + |0.7|) = 1.9; with s = 2: 3.8
    assert f_of(MCCLoss(variant=variant, stage="finetune"), -0.2, 0.7) == pytest.approx(1.9)
    assert f_of(MCCLoss(variant=variant, stage="finetune", scale=2.0), -0.2, 0.7) == pytest.approx(3.8)
    # both negative: 1 + 0.3 + 0.4 = 1.7
    assert f_of(MCCLoss(variant=variant, stage="finetune"), -0.3, -0.4) == pytest.approx(1.7)


def test_reference_pretrain_both_branches():
    loss = MCCLoss(g=0.2, variant="reference", stage="pretrain")
    # c = (-0.2 + 0.7) / 2 = 0.25 >= 0 (one cosine negative does not matter here):
    # f = |cos(pi (0.25 + 0.2))| = cos(0.45 pi) = sin(0.05 pi) = 0.1564345
    assert f_of(loss, -0.2, 0.7) == pytest.approx(math.sin(0.05 * PI), abs=1e-12)
    assert f_of(loss, -0.2, 0.7) == pytest.approx(0.1564344650, abs=1e-9)
    # c = (-0.6 + 0.2) / 2 = -0.2 < 0: f = 1 - (-0.2) = 1.2
    assert f_of(loss, -0.6, 0.2) == pytest.approx(1.2)


@pytest.mark.parametrize("g", [-0.3, 0.0, 0.2, 0.25, 0.4])
@pytest.mark.parametrize("variant,stage", [("paper", "finetune"), ("reference", "finetune"), ("reference", "pretrain")])
def test_fixed_point_half_minus_g(g, variant, stage):
    # cos_a = cos_v = c = 1/2 - g: dtheta = 0, exp(0) = 1, f = |cos(pi (1/2 - g + g))| = |cos(pi/2)| = 0
    loss = MCCLoss(g=g, variant=variant, stage=stage)
    c = 0.5 - g
    assert f_of(loss, c, c) == pytest.approx(0.0, abs=1e-12)
    # ... and only there: 0.1 above, f = |cos(0.6 pi)| = sin(0.1 pi) = 0.309017
    assert f_of(loss, c + 0.1, c + 0.1) == pytest.approx(math.sin(0.1 * PI), abs=1e-12)


def test_weight_scales_and_forward_is_the_batch_mean():
    torch.manual_seed(0)
    fused, audio, video = torch.randn(4, 5, 6), torch.randn(4, 7, 3), torch.randn(4, 2, 11)
    base = MCCLoss(g=0.2)
    f = base.per_sample(*modality_cosines(fused, audio, video))
    assert f.shape == (4,)
    assert base(fused, audio, video).item() == pytest.approx(f.mean().item(), rel=1e-6)
    assert MCCLoss(g=0.2, weight=0.5)(fused, audio, video).item() == pytest.approx(0.5 * f.mean().item(), rel=1e-6)
    assert MCCLoss(g=0.2, weight=0.0)(fused, audio, video).item() == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"variant": "Paper"},
        {"stage": "train"},
        {"g": float("nan")},
        {"weight": -1.0},
        {"scale": 0.0},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        MCCLoss(**kwargs)


# ---------------------------------------------------------------- cosines


def test_cosines_by_hand_audio_repeated_video_padded():
    # fused [1, 1, 0, 0] (n = 4 = n_max); audio [1, 1] (n = 2 divides 4: repeated twice -> [1, 1, 1, 1]);
    # video [0, 1, 1] (n = 3: floor(4/3) = 1 copy, zero-padded -> [0, 1, 1, 0]).
    # cos_a = 2 / (sqrt 2 * 2) = 0.7071068; cos_v = 1 / (sqrt 2 * sqrt 2) = 0.5
    fused = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])  # (1, 2, 2)
    audio = torch.tensor([[[1.0], [1.0]]])  # (1, 2, 1)
    video = torch.tensor([[[0.0, 1.0, 1.0]]])  # (1, 1, 3)
    cos_a, cos_v = modality_cosines(fused, audio, video)
    assert cos_a.item() == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    assert cos_v.item() == pytest.approx(0.5, abs=1e-6)


def test_cosines_by_hand_fused_is_the_short_one():
    # audio [1, 2, 1, 2, 0] is the longest (n_max = 5); fused [1, 2] -> floor(5/2) = 2 copies + one zero
    # -> [1, 2, 1, 2, 0] = audio, cos_a = 1. video [3] -> 5 copies [3, 3, 3, 3, 3];
    # cos_v = (3 + 6 + 3 + 6 + 0) / (sqrt(10) * sqrt(45)) = 18 / sqrt(450) = 0.8485281
    fused = torch.tensor([[[1.0, 2.0]]])
    audio = torch.tensor([[[1.0], [2.0], [1.0], [2.0], [0.0]]])
    video = torch.tensor([[[3.0]]])
    cos_a, cos_v = modality_cosines(fused, audio, video)
    assert cos_a.item() == pytest.approx(1.0, abs=1e-6)
    assert cos_v.item() == pytest.approx(18 / math.sqrt(450), abs=1e-6)


@pytest.mark.parametrize(
    "shapes",
    [
        # fused n = 20 = n_max; audio n = 10 divides it (2 copies); video n = 9 does not (2 copies + 2 zeros)
        ((3, 5, 4), (3, 2, 5), (3, 3, 3)),
        # audio n = 30 is the longest; fused n = 12 (2 copies + 6 zeros); video n = 7 (4 copies + 2 zeros)
        ((4, 3, 4), (4, 10, 3), (4, 7, 1)),
        # all the same length: no repeat, no pad
        ((2, 4, 3), (2, 6, 2), (2, 3, 4)),
        # realistic sizes of the reference (L=39, T_a=400 x 33, T_v=55 x 709) with a small d_t
        ((2, 39, 16), (2, 400, 33), (2, 55, 709)),
    ],
)
def test_vectorised_equals_reference_loop(shapes):
    gen = torch.Generator().manual_seed(sum(map(sum, shapes)))
    fused, audio, video = (torch.randn(*s, generator=gen, dtype=torch.float64) for s in shapes)
    got = modality_cosines(fused, audio, video)
    want = reference_modality_cosines(fused, audio, video)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-12)
        assert g.abs().max() > 1e-4  # random inputs: not trivially zero


def test_masks_zero_padded_positions():
    torch.manual_seed(1)
    fused, audio, video = torch.randn(3, 6, 4), torch.randn(3, 8, 3), torch.randn(3, 5, 2)
    fused_mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4], dtype=torch.bool)
    audio_mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3, [1] * 8])
    # All-ones masks reproduce the unmasked reference numbers.
    ones = [torch.ones(x.shape[:2]) for x in (fused, audio, video)]
    for g, w in zip(modality_cosines(fused, audio, video, *ones), reference_modality_cosines(fused, audio, video)):
        torch.testing.assert_close(g, w)
    # A mask is the same as zeroing those positions by hand ...
    masked = modality_cosines(fused, audio, video, fused_mask=fused_mask, audio_mask=audio_mask)
    zeroed = reference_modality_cosines(fused * fused_mask[..., None], audio * audio_mask[..., None], video)
    for g, w in zip(masked, zeroed):
        torch.testing.assert_close(g, w)
    # ... so whatever sits in the padded positions no longer matters.
    garbage_f = torch.where(fused_mask[..., None], fused, torch.full_like(fused, 50.0))
    garbage_a = torch.where(audio_mask[..., None].bool(), audio, torch.full_like(audio, -50.0))
    again = modality_cosines(garbage_f, garbage_a, video, fused_mask=fused_mask, audio_mask=audio_mask)
    for g, w in zip(again, masked):
        torch.testing.assert_close(g, w)
    with pytest.raises(ValueError):
        modality_cosines(fused, audio, video, audio_mask=torch.ones(3, 7))


def test_shape_errors():
    with pytest.raises(ValueError):
        modality_cosines(torch.randn(2, 3, 4), torch.randn(3, 3, 4), torch.randn(2, 3, 4))
    with pytest.raises(ValueError):
        modality_cosines(torch.randn(2, 12), torch.randn(2, 3, 4), torch.randn(2, 3, 4))


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("variant,stage", [("paper", "finetune"), ("reference", "finetune"), ("reference", "pretrain")])
def test_gradients_flow_to_the_fused_input(variant, stage):
    torch.manual_seed(2)
    # Audio and video positively correlated with the fused tensor so the "similar" branch is active.
    base = torch.randn(4, 6, 5)
    fused = base.clone().requires_grad_(True)
    audio = base.reshape(4, 10, 3) + 0.8 * torch.randn(4, 10, 3)
    video = base.reshape(4, 15, 2) + 1.5 * torch.randn(4, 15, 2)
    loss = MCCLoss(g=0.2, variant=variant, stage=stage)
    cos_a, cos_v = modality_cosines(fused, audio, video)
    assert (cos_a > 0).all() and (cos_v > 0).all()
    loss(fused, audio, video).backward()
    assert torch.isfinite(fused.grad).all()
    assert fused.grad.abs().sum() > 1e-6


def test_gradients_finite_at_cosine_one():
    # fused == audio == video: cos_a = cos_v = 1, where arccos' = -1/sqrt(1 - x^2) is infinite. The clamp
    # before arccos keeps the backward pass finite (without it: inf * 0 = nan).
    torch.manual_seed(3)
    x = torch.randn(2, 4, 3)
    fused = x.clone().requires_grad_(True)
    loss = MCCLoss(g=0.2, variant="paper")
    value = loss(fused, x, x)
    value.backward()
    # f = |cos(pi (1 + 0.2))| = cos(0.2 pi) = 0.809017
    assert value.item() == pytest.approx(math.cos(0.2 * PI), abs=1e-5)
    assert torch.isfinite(fused.grad).all()


def test_half_precision_inputs_are_computed_in_float32():
    torch.manual_seed(4)
    fused, audio, video = torch.randn(2, 39, 64), torch.randn(2, 400, 33), torch.randn(2, 55, 709)
    want = modality_cosines(fused, audio, video)
    got = modality_cosines(fused.bfloat16(), audio.bfloat16(), video.bfloat16())
    for g, w in zip(got, want):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, w, atol=5e-3, rtol=0)


@pytest.mark.parametrize("g", [-0.5, -0.05, 0.2, 0.25])
def test_g_sweeps_share_runs_exactly_where_the_finetuning_form_has_period_one(g):
    """kebr.variants G_PERIODIC_FINETUNE_FORMS: where the fine-tuning form's loss (and so its
    gradient) is the same at g and g + 1, the g sweep trains one run set for both (its -0.5 and 0.5)."""
    from kebr.variants import G_PERIODIC_FINETUNE_FORMS

    cos = torch.linspace(-0.99, 0.99, 41, dtype=torch.float64)
    cos_a, cos_v = (c.reshape(-1) for c in torch.meshgrid(cos, cos, indexing="ij"))
    for variant in ("paper", "reference"):
        f = [MCCLoss(g=g + shift, variant=variant, stage="finetune", scale=1.5).per_sample(cos_a, cos_v)
             for shift in (0.0, 1.0)]
        periodic = torch.allclose(f[0], f[1], atol=1e-9)
        assert periodic == (variant in G_PERIODIC_FINETUNE_FORMS), variant
