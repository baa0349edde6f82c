"""Fine-tuning (kebr/train/finetune.py) on the tiny shards (tests/tiny_training.py): the unmasked text
it reads, the pretrained LM and TCMF it starts from with a fresh head, its metrics and predictions,
that it learns the label, the optimizer's learning-rate groups (``lr_fusion``), and the epoch
selection rules (``select_by``) with the selection losses by hand."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from kebr.masking import load_tokenizer
from kebr.metrics import METRIC_KEYS, evaluate_predictions_csv
from kebr.model import KEBR, KEBRConfig
from kebr.predict import evaluated_with_amp
from kebr.shards import ShardDataset
from kebr.train.checkpoint import load_weights, read_weights, state_name
from kebr.train.finetune import build_finetune_model, finetune
from kebr.train.loop import Objective
from kebr.train.settings import MCCSettings
from tiny_training import CPU, FINETUNE, FINETUNE_SEED, FT_CONFIG, SENTENCES, SPLITS, first_batch, read_log


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("bundled")


def test_shards_carry_unmasked_text_for_finetuning(train_shards, tokenizer):
    data = ShardDataset(train_shards)
    for i in range(len(data)):
        item, (text, _) = data[i], SENTENCES[i]
        raw = item["raw_input_ids"][item["raw_attention_mask"]]
        assert tokenizer.decode(raw, skip_special_tokens=True) == tokenizer.decode(
            tokenizer(text)["input_ids"], skip_special_tokens=True)
        assert tokenizer.mask_token_id not in raw.tolist()
        assert item["input_ids"][item["mask_index"]] == tokenizer.mask_token_id


def test_pretrained_lm_and_tcmf_reach_finetuning_with_a_fresh_head(pretrained):
    stored = read_weights(pretrained)
    torch.manual_seed(1)
    model = build_finetune_model(FT_CONFIG, pretrained)
    torch.manual_seed(1)
    fresh = KEBR(FT_CONFIG)
    own = model.state_dict()
    for prefix in ("tcmf.", "text.", "pretrain_head."):
        names = [k for k in stored if k.startswith(prefix)]
        assert names and all(torch.equal(own[k], stored[k]) for k in names), prefix
    # TCMF really was trained, so equality above is not two identical initialisations.
    assert not all(torch.equal(v, fresh.state_dict()[k]) for k, v in own.items() if k.startswith("tcmf."))
    for k, v in fresh.finetune_head.state_dict().items():
        assert torch.equal(model.finetune_head.state_dict()[k], v)
        assert not torch.equal(stored[f"finetune_head.{k}"], v)
    with pytest.raises(ValueError, match="num_layers"):
        build_finetune_model(KEBRConfig(**{**FT_CONFIG.to_dict(), "num_layers": 2}), pretrained)


def test_finetune_writes_metrics_and_predictions(finetuned, train_runs):
    run = train_runs / "finetune"
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {*METRIC_KEYS, "best_epoch", "select_by", "best_valid_mae", "best_valid_loss", "seed",
                            "n_test"}
    assert metrics["select_by"] == "valid_mae"
    assert metrics["seed"] == 1 and metrics["n_test"] == 4
    with (run / "predictions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    expected = {f"spk{i % 4}__clip{i:02d}": label for i, (_, label) in enumerate(SENTENCES) if SPLITS[i % 6] == "test"}
    assert {r["clip_id"]: float(r["label"]) for r in rows} == pytest.approx(expected)
    assert {r["split"] for r in rows} == {"test"}
    recomputed = evaluate_predictions_csv(run / "predictions.csv")
    for key in METRIC_KEYS:
        assert metrics[key] == pytest.approx(recomputed[key], nan_ok=True, rel=1e-5), key
        assert finetuned[key] == pytest.approx(metrics[key], nan_ok=True)
    log = read_log(run)
    maes = [r["valid_mae"] for r in log]
    assert metrics["best_epoch"] == 1 + int(np.argmin(maes))
    assert metrics["best_valid_mae"] == pytest.approx(min(maes))
    assert (run / "best").resolve().name == f"epoch-{metrics['best_epoch']:04d}"
    # Cosine annealing stepped per epoch: epoch 1 at the initial rates, then falling.
    assert log[0]["lr_head"] == pytest.approx(2e-3) and log[1]["lr_head"] < log[0]["lr_head"]


def test_finetune_learns_the_label(finetuned, train_runs):
    log = read_log(train_runs / "finetune")
    assert log[-1]["l_task"] < 0.5 * log[0]["l_task"], [r["l_task"] for r in log]
    assert finetuned["corr"] > 0.8  # audio column 0 carries the label


@pytest.mark.parametrize("lr_fusion", [None, 1e-4], ids=["with_the_lm", "own_rate"])
def test_finetuning_gives_tcmf_its_own_learning_rate_when_lr_fusion_is_set(train_shards, tmp_path, lr_fusion):
    """finetune.lr_fusion: TCMF in an Adam group of its own at that rate (the paper's "5e-6 for BERT and
    1e-4 for other parameters", 4.2); None keeps it in the LM's group at lr_backbone (the reference,
    main.py:85-86). The optimizer's groups hold each parameter once, and a run logs and steps every rate."""
    from kebr.train.finetune import optimizer_groups
    from kebr.train.loop import adam

    model = KEBR(FT_CONFIG)
    optimizer = adam(optimizer_groups(model, lr_backbone=5e-6, lr_head=1e-3, lr_fusion=lr_fusion))
    ids = lambda params: {id(p) for p in params}  # noqa: E731
    groups = {g["name"]: (g["lr"], ids(g["params"])) for g in optimizer.param_groups}
    lm, tcmf = ids(model.text.parameters()), ids(model.tcmf.parameters())
    heads = ids([*model.pretrain_head.parameters(), *model.finetune_head.parameters()])
    assert groups["head"] == (1e-3, heads)
    if lr_fusion is None:
        assert groups.keys() == {"backbone", "head"} and groups["backbone"] == (5e-6, lm | tcmf)
    else:
        assert groups.keys() == {"backbone", "fusion", "head"}
        assert groups["backbone"] == (5e-6, lm) and groups["fusion"] == (1e-4, tcmf)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))

    run = tmp_path / "run"
    finetune(train_shards, run, model_config=FT_CONFIG, pretrained=None, seed=FINETUNE_SEED, max_steps_per_epoch=1,
             settings=replace(FINETUNE, epochs=2, t_max=2, lr_fusion=lr_fusion, log_every_steps=0))
    log = read_log(run)
    assert log[0]["lr_backbone"] == pytest.approx(FINETUNE.lr_backbone)
    if lr_fusion is None:
        assert "lr_fusion" not in log[0]
    else:  # the cosine schedule steps TCMF's rate like the others: half of it after one of two epochs
        assert [r["lr_fusion"] for r in log] == pytest.approx([lr_fusion, lr_fusion / 2])


# Short runs of the frozen-LM model for the selection rules.
QUICK_FINETUNE = replace(FINETUNE, epochs=3, lr_backbone=2e-3, t_max=3, log_every_steps=0)


@pytest.mark.parametrize("mcc", [{"enabled": True, "variant": "paper", "g": 0.2, "weight": 1.0},
                                 {"enabled": True, "variant": "reference", "g": 0.4, "weight": 0.5},
                                 {"enabled": False, "variant": "paper", "g": 0.2, "weight": 1.0}],
                         ids=["paper", "reference", "mcc_off"])
def test_select_by_valid_loss_ranks_by_the_runs_own_objective_in_fp32(train_shards, tmp_path, mcc):
    """select_by: valid_loss ranks epochs by the loss the run trains with (spec 4): its MCC variant, g and
    weight, and L1 alone when MCC is off; evaluation in fp32 (eval_amp false) follows to kebr predict."""
    frozen = KEBRConfig(**{**FT_CONFIG.to_dict(), "freeze_text": True})  # the LM frozen: a quick run
    run = tmp_path / "run"
    # amp on (a no-op on the CPU) so that eval_amp false is what keeps kebr predict in fp32
    settings = replace(QUICK_FINETUNE, select_by="valid_loss", amp=True, eval_amp=False,
                       mcc=replace(QUICK_FINETUNE.mcc, **mcc))
    metrics = finetune(train_shards, run, model_config=frozen, pretrained=None, settings=settings, seed=2)
    log = read_log(run)
    losses = [r["valid_loss"] for r in log]
    assert metrics["select_by"] == "valid_loss" and metrics["best_epoch"] == 1 + int(np.argmin(losses))
    assert metrics["best_valid_loss"] == pytest.approx(min(losses))
    # The logged value is the training objective's loss on the valid clips (one batch: 4 clips).
    model = KEBR(frozen).eval()
    load_weights(run / state_name(metrics["best_epoch"]), model)
    batch = first_batch(train_shards, "finetune", split="valid")
    with torch.no_grad():
        training_loss = Objective("finetune", settings.mcc)(model, batch, CPU)["loss"].item()
    assert losses[metrics["best_epoch"] - 1] == pytest.approx(training_loss, rel=1e-5)
    if not mcc["enabled"]:  # no MCC term: the selection loss is the valid MAE
        assert [r["valid_loss"] for r in log] == pytest.approx([r["valid_mae"] for r in log], rel=1e-6)
    assert evaluated_with_amp(run / state_name(metrics["best_epoch"])) is False  # kebr predict: fp32 too


def test_the_selection_loss_of_an_mcc_run_by_hand():
    """``score`` by hand for the reference's fine-tuning form: L1 + weight x |cos(pi((a + b)/2 + g) e^{|a-b|/2})|."""
    from kebr.train.finetune import score

    predicted = {"prediction": np.array([1.0, -0.5], np.float32), "target": np.array([0.5, 0.5], np.float32),
                 "cos_a": np.array([0.2, 0.6], np.float32), "cos_v": np.array([0.4, 0.0], np.float32)}
    objective = Objective("finetune", MCCSettings(enabled=True, variant="reference", g=0.4, weight=0.5, scale=1.0,
                                                  text_positions="real", sequence="tcmf", trains_lm=False))
    f = [abs(math.cos(math.pi * ((a + b) / 2 + 0.4) * math.exp(abs(a - b) / 2))) for a, b in ((0.2, 0.4), (0.6, 0.0))]
    assert score(predicted, objective)["loss"] == pytest.approx(0.75 + 0.5 * np.mean(f), rel=1e-6)
    objective.enabled = False
    assert score(predicted, objective)["loss"] == pytest.approx(0.75)


def test_the_reference_codes_selection_loss_by_hand():
    """``loss_reference``: valid L1 + the code's pretraining-form MCC at the run's g, weight 1, whatever the
    run trains with (aoqzhu/KEBR main.py:158-165): c = (cos_a + cos_v) / 2, |cos(pi (c + g))| if c >= 0
    else 1 - c; here with the paper's form and lambda 0.5 training, and with MCC off."""
    from kebr.train.finetune import score

    predicted = {"prediction": np.array([1.0, -0.5, 0.0], np.float32), "target": np.array([0.5, 0.5, 0.0], np.float32),
                 "cos_a": np.array([0.2, 0.6, -0.5], np.float32), "cos_v": np.array([0.4, 0.0, 0.1], np.float32)}
    by_hand = [abs(math.cos(math.pi * (0.3 + 0.2))), abs(math.cos(math.pi * (0.3 + 0.2))), 1 - (-0.2)]
    for enabled in (True, False):
        objective = Objective("finetune", replace(FINETUNE.mcc, enabled=enabled, weight=0.5))  # paper form, g 0.2
        scored = score(predicted, objective)
        assert scored["loss_reference"] == pytest.approx(0.5 + np.mean(by_hand), rel=1e-6)
        assert (scored["loss"] == pytest.approx(0.5)) is not enabled  # the run's own objective differs


def test_select_by_valid_loss_reference_ranks_by_the_codes_rule(train_shards, tmp_path):
    frozen = KEBRConfig(**{**FT_CONFIG.to_dict(), "freeze_text": True})  # the LM frozen: a quick run
    run = tmp_path / "run"
    settings = replace(QUICK_FINETUNE, select_by="valid_loss_reference",
                       mcc=replace(QUICK_FINETUNE.mcc, variant="reference", g=0.4, weight=1.0))
    metrics = finetune(train_shards, run, model_config=frozen, pretrained=None, settings=settings, seed=2)
    log = read_log(run)
    chosen = [r["valid_loss_reference"] for r in log]
    assert metrics["select_by"] == "valid_loss_reference" and metrics["best_epoch"] == 1 + int(np.argmin(chosen))
    # the code's rule is not the training objective's (the fine-tuning form trains, main.py:122-128)
    assert all(r["valid_loss_reference"] != pytest.approx(r["valid_loss"]) for r in log)
