"""The paper recipe (kebr/recipe.py, kebr/recipes/paper.yaml): what the paper targets train with, its
runs beside the config's own, deviations in the table headers, and `kebr config-check --recipe`."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from kebr.config import _schema, load_config, validate_config
from kebr.experiments import (
    NON_RESULT_KEYS,
    canonical_variant,
    finetune_run_dir,
    pretrain_variant,
    recipe,
    table_rows,
    table_runs,
    training_fingerprint,
)
from kebr.models import required_models
from kebr.plots import table_figures
from kebr.recipe import SPEED_KEYS, load_recipe, table_header
from kebr.tables import build_table

REPO = Path(__file__).resolve().parents[1]
FOUR_CORPORA = {
    "voxceleb1": {"layout": "voxceleb1", "root": "corpora/VoxCeleb1"},
    "voxceleb2": {"layout": "voxceleb2", "root": "corpora/VoxCeleb2"},
    "mosi": {"layout": "mmsa_raw", "root": "corpora/MOSI"},
    "mosei": {"layout": "mmsa_raw", "root": "corpora/MOSEI"},
}


def paper_config(**extra) -> dict:
    return validate_config(json.loads(json.dumps({"results": "out", "datasets": FOUR_CORPORA, **extra})))


def test_paper_targets_train_the_recipe_beside_the_configs_own_runs():
    config = paper_config()
    rows = {r["label"]: r for r in table_rows("table2", config)}
    assert list(rows) == [f"{f} / {p} / paper-{v}" for v in ("full", "mcc_reference")
                          for f in ("mosi", "mosei") for p in ("voxceleb1", "voxceleb2")]
    full = recipe(config, "paper-full", "mosi")
    # Eq. 7's LN residual and 4.2's 1e-4 for TCMF: the paper's values where it states them
    assert full["finetune"]["lr_fusion"] == 1e-4 and full["finetune"]["lr_backbone"] == 5e-6
    assert full["model"] == {**full["model"], "text_model": "bert-large-uncased", "residual": "layernorm",
                             "mask_padding": False, "masked_mean": False, "share_weights": True}
    tuned, pre = full["finetune"], recipe(config, "paper-full", "voxceleb1")["pretrain"]
    assert (tuned["eval_amp"], tuned["amp"], tuned["bucket_by_length"], tuned["select_by"]) == (False, False, False,
                                                                                               "valid_loss")
    assert tuned["mcc"] == {"enabled": True, "variant": "paper", "g": 0.2, "weight": 1.0, "scale": 1.0,
                            "text_positions": "all"}
    # The paper states one MCC for both stages (3.4, Eq. 17 unweighted, g = 0.2 in 4.2), not the code's 0.25 / 0.5.
    assert pre["mcc"] == tuned["mcc"]
    assert pre["save_epochs"] == [1, 5, 10, 20, 50, 100, 150, 200] and pre["frozen_lm_dropout"] is True
    assert (pre["lm_cache"], pre["bucket_by_length"], pre["mcc"]["text_positions"]) == ("none", False, "all")
    # The extra row: the reference's fine-tuning MCC, from the same pretraining run, labelled, no paper numbers.
    extra = rows["mosi / voxceleb1 / paper-mcc_reference"]
    assert recipe(config, extra["variant"], "mosi")["finetune"]["mcc"]["variant"] == "reference"
    assert recipe(config, extra["variant"], "mosi")["finetune"]["mcc"]["g"] == 0.4
    assert pretrain_variant(extra["variant"]) == "paper-full" and extra["paper"] is None
    assert extra["paper_row"].startswith("extra: reference code's fine-tuning MCC")
    # The paper recipe's runs and the config's own never share a directory, and differ in what they learn.
    assert finetune_run_dir("out", "mosi", "voxceleb1", "paper-full", 0) != finetune_run_dir(
        "out", "mosi", "voxceleb1", "full", 0)
    assert training_fingerprint(config, "pretrain", "paper-full", "voxceleb1") != training_fingerprint(
        config, "pretrain", "full", "voxceleb1")
    # Variants equal to the recipe's full one are not trained twice; Table 3's BERT-base row is its own.
    assert canonical_variant(config, "paper-bert_large") == "paper-full" == canonical_variant(config, "paper-g0.2")
    assert [r["variant"] for r in table_rows("table3", config)] == ["paper-bert_base", "paper-full"] * 2
    assert recipe(config, "paper-bert_base")["model"]["text_model"] == "bert-base-uncased"
    assert pretrain_variant("paper-g-0.5") == "paper-full" and pretrain_variant("paper-no_pretrain") is None
    # The LMs the paper runs need are fetched by `snakemake models`.
    assert {"bert-large-uncased", "bert-base-uncased"} <= {m.name for m in required_models(config) if m.kind == "text"}
    # paper_recipe.name: none runs the config's own settings, as before the recipe existed.
    own = paper_config(paper_recipe={"name": "none"})
    assert [r["variant"] for r in table_rows("table2", own)] == ["full"] * 4


def test_demo_targets_keep_the_configs_own_recipe():
    config = load_config(REPO / "config.yaml")
    assert [r["variant"] for r in table_rows("demo", config)] == ["full", "no_pretrain"]
    assert [r["variant"] for r in table_rows("demo_gsweep", config)] == ["g-0.5", "full", "g0.5"]
    model = recipe(config, "full", "demo_labelled")["model"]
    assert (model["text_model"], model["residual"], model["mask_padding"]) == ("bundled", "layernorm", True)
    assert recipe(config, "full", "demo_labelled")["finetune"]["epochs"] == 30  # the demo dataset's own keys
    assert [m.name for m in required_models(config) if m.kind == "text"] == ["bundled"]  # nothing to fetch


def test_recipe_names_every_key_that_changes_a_result():
    """A result key the recipe left out would run with whatever the config says, unreported."""
    schema = _schema()
    training = load_recipe("paper")["training"]

    def keys(prefix, node):
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node
        for name, sub in node["properties"].items():
            if "properties" in sub:
                yield from keys(f"{prefix}.{name}", sub)
            elif name not in NON_RESULT_KEYS - {"save_epochs", "seeds"} and name not in SPEED_KEYS:
                yield f"{prefix}.{name}"

    expected = {"text.model"} | {k for s in ("model", "pretrain", "finetune") for k in keys(s, schema["properties"][s])}
    assert set(training) == expected
    assert all(entry["source"] for entry in training.values())


def test_overrides_are_checked_and_reported_as_deviations():
    with pytest.raises(ValueError) as error:
        paper_config(paper_recipe={"overrides": {"visual.backend": "mediapipe", "pretrain.colour": 1,
                                                 "pretrain.amp": "yes"}})
    message = str(error.value)
    assert "overrides/visual.backend: a feature key: set it in the config's `visual:` section" in message
    assert "overrides/pretrain.colour: not a training key of recipe 'paper'" in message
    assert "overrides/pretrain.amp: 'yes' is not of type 'boolean'" in message
    with pytest.raises(ValueError, match="paper_recipe/name"):
        paper_config(paper_recipe={"name": "other"})


def test_config_check_lists_each_paper_value_its_source_and_what_differs(tmp_path):
    datasets = {**FOUR_CORPORA, "voxceleb2": {**FOUR_CORPORA["voxceleb2"], "pretrain": {"batch_size": 64}}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "datasets": datasets, "paper_recipe": {"overrides": {"text.model": "bert-base-uncased"}},
        "audio": {"resample_via": 16000}}))
    result = subprocess.run([sys.executable, "-m", "kebr", "config-check", str(tmp_path / "c.yaml"), "--recipe", "paper"],
                            capture_output=True, text=True, check=True)
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line[:1].isalpha() and "  " in line}
    assert lines["text.model"].split()[1:4] == ["bert-large-uncased", "bert-base-uncased", "bundled"]
    assert "[paper 4.2 (BERT), 4.4 Table 3" in lines["text.model"]
    assert lines["model.residual"].split()[1:4] == ["layernorm", "=", "="]
    assert "[paper 3.3 Eq. 7 (M = M_a + LN(X_{k-1}) + M_v)" in lines["model.residual"]
    assert lines["finetune.lr_fusion"].split()[1:4] == ["0.0001", "=", "null"]
    assert lines["finetune.mcc.g"].split()[1:4] == ["0.2", "=", "="] and "paper 4.2" in lines["finetune.mcc.g"]
    assert lines["pretrain.batch_size"].split()[1:6] == ["32", "32", "on", "voxceleb1,", "64"]
    assert lines["audio.resample_via"].split()[1:3] == ["16000", "="]
    assert lines["visual.backend"].split()[1:3] == ["openface_csv", "mediapipe"]
    assert "-> MediaPipe Face Mesh (or py-feat) visual features instead of OpenFace 2's" in result.stdout
    assert "paper-mcc_reference (table2): finetune.mcc.variant: reference, finetune.mcc.g: 0.4" in result.stdout


def write_metrics(rows: list[dict], seed_offset: float = 0.0) -> None:
    for i, row in enumerate(rows):
        for k, path in enumerate(row["metrics_files"]):
            path.parent.mkdir(parents=True, exist_ok=True)
            score = 0.8 + 0.01 * i + 0.001 * k
            path.write_text(json.dumps({"acc2_has0": score, "acc2_non0": score, "f1_has0": score, "f1_non0": score,
                                        "acc7": 0.4, "acc5": 0.45, "acc3": 0.6, "mae": 0.7 + 0.01 * k,
                                        "corr": 0.8, "n_test": 686 if row["finetune"] == "mosi" else 4659}))


def test_table_header_names_the_recipe_the_forced_deviations_and_the_extra_rows(tmp_path):
    datasets = {**FOUR_CORPORA, "mosei": {"layout": "mmsa_pickle", "pickle": "MOSEI/unaligned_50.pkl",
                                          "trust_pickle": True}}
    config = paper_config(results=str(tmp_path / "out"), datasets=datasets,
                          paper_recipe={"overrides": {"finetune.eval_amp": True}}, finetune={"seeds": [0, 1]})
    rows = table_runs("table2", config)
    assert len(rows) == 8 and all(len(r["metrics_files"]) == 5 for r in rows)  # the recipe's 5 seeds
    write_metrics(rows)
    title, header = table_header("table2", config, rows)
    build_table(title, rows, tmp_path / "t.md", tmp_path / "t.csv", header)
    md = (tmp_path / "t.md").read_text()
    assert md.startswith("# table2: recipe paper, 4 deviations from the paper\n")
    assert "Recipe: recipe `paper` (kebr/recipes/paper.yaml" in md
    assert ("- `finetune.eval_amp`: true on mosei, mosi (paper: false, paper silent; aoqzhu/KEBR@171de2d "
            "main.py:147-166 (fp32 evaluation); "
            "set by paper_recipe.overrides)") in md
    assert "- `visual.backend`: mediapipe (paper: openface_csv" in md and "no OpenFace CSVs given" in md
    assert "- `audio.resample_via`: null (paper: 16000" in md
    assert "- `mosei`: features read from an MMSA pickle (MOSEI/unaligned_50.pkl), not extracted" in md
    assert "Extra rows (`extra` in the paper row column; not in the paper): `mcc_reference`: reference code's" in md
    assert "- VoxCeleb transcripts come from Whisper" in md  # the differences no switch removes
    assert "| mosi / voxceleb1 / paper-full | 5 | 686 of 686 |" in md and "| MOSI / voxceleb1 / full | 84.4/87.2 |" in md
    extra = next(line for line in md.splitlines() if line.startswith("| mosi / voxceleb1 / paper-mcc_reference |"))
    assert "| extra: reference code's fine-tuning MCC (abs(cos_a - cos_v) form, g = 0.4)" in extra
    assert extra.endswith("| - | - | - | - | - |")
    # The figure carries the same title; the HTML page the header.
    table_figures("table2", config, tmp_path / "t.md", tmp_path / "t.csv", tmp_path / "fig")
    assert "table2: recipe paper, 4 deviations from the paper" in (tmp_path / "fig.svg").read_text()
    assert "features read from an MMSA pickle" in (tmp_path / "fig.html").read_text()
    # Without deviations a switch could remove, the header says so; the demo's names the config recipe.
    clean = paper_config(audio={"resample_via": 16000}, visual={"backend": "openface_csv", "openface_dir": "of"})
    title, header = table_header("table4", clean, table_rows("table4", clean))
    assert title == "table4: recipe paper, 0 deviations from the paper"
    assert "Deviations from the paper in these runs: none a switch could remove." in header
    demo = load_config(REPO / "config.yaml")
    title, header = table_header("demo", demo, table_rows("demo", demo))
    assert title == "demo: config recipe (not the paper's)"
    assert any(line.startswith("- `text.model`: bundled (paper: bert-large-uncased") for line in header)


def test_paper_recipe_trains_through_pretraining_and_finetuning(tmp_path):
    """The recipe's switches together on real shards (the bundled MiniLM in place of BERT-large, an
    override, and 2 epochs): both runs finish, record the recipe, and read the config's own shards."""
    from test_train import D_A, D_V, L, SENTENCES, SPLITS, T_A, T_V

    from kebr.config import features_fingerprint
    from kebr.experiments import run_finetuning, run_pretraining
    from kebr.masking import SentimentMasker, load_tokenizer
    from kebr.shards import ShardRow, write_shard

    overrides = {"text.model": "bundled", "pretrain.epochs": 2, "pretrain.save_epochs": [1, 2], "finetune.epochs": 2,
                 "finetune.seeds": [0], "pretrain.batch_size": 8, "finetune.batch_size": 8, "model.num_layers": 1,
                 "model.d_embed": 32, "model.head_hidden": 32}
    config = validate_config({"results": str(tmp_path / "out"), "paper_recipe": {"overrides": overrides},
                              "text": {"max_length": L}, "pretrain": {"num_workers": 0}, "finetune": {"num_workers": 0},
                              "datasets": {"vox": {"layout": "manifest", "manifest": "v.csv"},
                                           "mo": {"layout": "manifest", "manifest": "m.csv"}}})
    tokenizer = load_tokenizer("bundled")
    masker, rng = SentimentMasker(tokenizer, max_length=L, seed=0), np.random.default_rng(0)
    transcript = {"source": "gold", "avg_logprob": 0.0, "no_speech_prob": 0.0, "language_prob": 1.0,
                  "language": "en", "words": []}
    rows = [ShardRow(f"s{i % 4}/c{i}", SPLITS[i % 6], f"s{i % 4}", label, transcript, masker(text, f"c{i}"),
                     rng.normal(0, 1, (int(rng.integers(5, T_A)), D_A)).astype(np.float32),
                     rng.normal(0, 1, (int(rng.integers(3, T_V)), D_V)).astype(np.float32))
            for i, (text, label) in enumerate(SENTENCES)]
    for dataset in ("vox", "mo"):
        root = tmp_path / "out" / dataset
        (root / "plan").mkdir(parents=True)
        (root / "plan" / "00000.tsv").write_text("")
        write_shard(root / "shards" / "00000.h5", rows, audio_columns=[f"a{j}" for j in range(D_A)],
                    visual_columns=[f"v{j}" for j in range(D_V)], audio_frames=T_A, visual_frames=T_V,
                    text_length=L, tokenizer=tokenizer,
                    attrs={"dataset": dataset, "shard": "00000", "text_model": "bundled", "feature_config": "{}",
                           "fingerprint": features_fingerprint(config, dataset)})
    pretrained = tmp_path / "out" / "pretrain" / "vox" / "paper-full"
    run_pretraining(config, "vox", "paper-full", pretrained)
    record = json.loads((pretrained / "trained_on.json").read_text())
    assert (record["model"]["residual"], record["model"]["mask_padding"], record["model"]["text_model"]) == (
        "layernorm", False, "bundled")
    assert (record["settings"]["frozen_lm_dropout"], record["settings"]["lm_cache"], record["settings"]["amp"],
            record["settings"]["mcc"]["text_positions"], record["settings"]["mcc"]["variant"]) == (
        True, "none", False, "all", "paper")
    assert sorted(p.name for p in pretrained.glob("epoch-*")) == ["epoch-0001", "epoch-0002"]
    out = tmp_path / "out" / "finetune" / "mo" / "vox" / "paper-mcc_reference" / "seed0"
    metrics = run_finetuning(config, "mo", pretrained, "paper-mcc_reference", 0, out)
    settings = json.loads((out / "trained_on.json").read_text())["settings"]
    assert (settings["select_by"], settings["eval_amp"], settings["bucket_by_length"]) == ("valid_loss", False, False)
    assert settings["mcc"] == {"enabled": True, "variant": "reference", "g": 0.4, "weight": 1.0, "scale": 1.0,
                               "text_positions": "all"}
    assert metrics["n_test"] == 4 and math.isfinite(metrics["mae"])
