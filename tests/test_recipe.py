"""The paper recipe (kebr/recipe.py, kebr/recipes/paper.yaml): what the paper targets train with, its
runs beside the config's own, deviations in the table headers, and `kebr config-check --recipe`."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from kebr.config import _schema, load_config, validate_config
from kebr import paths
from kebr.experiments import NON_RESULT_KEYS, table_runs, training_fingerprint
from kebr.variants import canonical_variant, pretrain_variant, recipe, table_file, table_of_file, table_rows
from kebr.model_cache import required_models
from kebr.plots.tables import table_figures
from kebr.deviations import describe, table_header
from kebr.recipe import SPEED_KEYS
from kebr.recipe_files import load_recipe, recipe_names
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
                            "text_positions": "all", "sequence": "tcmf", "trains_lm": True}
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
    assert paths.finetune_run_dir("out", "mosi", "voxceleb1", "paper-full", 0) != paths.finetune_run_dir(
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
    assert [r["variant"] for r in table_rows("demo", config)] == ["full", "no_pretrain", "text_only"]
    # The text-only baseline: a reference row with no paper numbers, trained like full minus fusion,
    # MCC and pretraining (same learning rates, epochs, schedule and selection).
    baseline = table_rows("demo", config)[-1]
    assert baseline["paper"] is None and baseline["paper_row"].startswith("extra: text-only baseline")
    assert baseline["paper_row"].endswith("not the paper's") and baseline["label"] == "demo_labelled / none / text_only"
    text_only, full = recipe(config, "text_only", "demo_labelled"), recipe(config, "full", "demo_labelled")
    assert text_only["model"] == {**full["model"], "text_only": True} and not text_only["uses_pretraining"]
    assert not text_only["finetune"]["mcc"]["enabled"]
    assert ({k: v for k, v in text_only["finetune"].items() if k != "mcc"}
            == {k: v for k, v in full["finetune"].items() if k != "mcc"})
    # The paper's fine-tuning MCC has period 1 in g: g 0.5 is g -0.5's objective and shares its runs;
    # the code's fine-tuning form has no period, so the reference recipe trains both.
    assert [r["variant"] for r in table_rows("demo_gsweep", config)] == ["g-0.5", "full", "g-0.5"]
    assert canonical_variant(config, "reference-g0.5") == "reference-g0.5"
    assert canonical_variant(config, "paper-g0.5") == "paper-g-0.5" and canonical_variant(config, "g1.2") == "full"
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
    from tiny_training import D_A, D_V, L, SENTENCES, SPLITS, T_A, T_V

    from kebr.fingerprints import features_fingerprint
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
                               "text_positions": "all", "sequence": "tcmf", "trains_lm": True}
    assert metrics["n_test"] == 4 and math.isfinite(metrics["mae"])


# A citation of the released code: the file and its lines (``main.py:85``, ``models.py:116-121``,
# ``pretrain.py:20 and 64``).
CODE_CITATION = re.compile(r"([\w./-]+\.(?:py|txt)):(\d+)(?:-(\d+))?(?: and (\d+)(?:-(\d+))?)?")
# A citation of the paper: a numbered section (3.3), an equation or a range (Eq. 7, Eq. 9-13), a table or figure.
PAPER_CITATION = re.compile(r"(?<![\w.+-])([1-5](?:\.[1-6])?)(?= Eq\.| Table| Fig\.| \(|,|;| and|\)| |$)"
                            r"|Eq\. (\d+)(?:-(\d+))?|Table (\d)|Fig\. (\d)")


def cited_code_lines(source: str) -> list[tuple[str, int, int]]:
    """(file, first line, last line) of every file:line in ``source``."""
    out = []
    for match in CODE_CITATION.finditer(source):
        path, first, last, more, more_last = match.groups()
        out.append((path, int(first), int(last or first)))
        if more:
            out.append((path, int(more), int(more_last or more)))
    return out


def cited_paper_parts(text: str) -> list[tuple[str, str]]:
    """("section" | "eq" | "table" | "fig", number) of every paper citation in ``text``, and for a
    section right before an equation, table or figure ("3.3 Eq. 7") the pair ("in", "3.3 eq 7")."""
    out = []
    for match in PAPER_CITATION.finditer(text):
        section, eq, eq_last, table, figure = match.groups()
        if section:
            out.append(("section", section))
            follows = PAPER_CITATION.match(text, match.end() + 1)
            if follows and follows.group(2):
                out += [("in", f"{section} eq {n}") for n in range(int(follows.group(2)),
                                                                    int(follows.group(3) or follows.group(2)) + 1)]
            elif follows and (follows.group(4) or follows.group(5)):
                kind = "table" if follows.group(4) else "fig"
                out.append(("in", f"{section} {kind} {follows.group(4) or follows.group(5)}"))
        elif eq:
            out += [("eq", str(n)) for n in range(int(eq), int(eq_last or eq) + 1)]
        else:
            out.append(("table", table) if table else ("fig", figure))
    return out


def test_every_source_cites_a_paper_part_or_a_code_line_that_exists():
    """paper.yaml: a value the paper states cites the section, equation, table or figure (each must be in
    docs/paper-index.yaml, an equation in the section named before it); a "paper silent" value cites the
    code's line. reference.yaml: every value cites file:line of the released code at the commit
    docs/reference-code.yaml records, inside the file's length there."""
    index = yaml.safe_load((REPO / "docs" / "paper-index.yaml").read_text())
    code = yaml.safe_load((REPO / "docs" / "reference-code.yaml").read_text())
    commit = f"{code['repository']}@{code['commit'][:7]}"
    where = {("eq", str(n)): s for n, (s, _) in index["equations"].items()}
    where |= {("table", str(n)): s for n, (s, _) in index["tables"].items()}
    where |= {("fig", str(n)): s for n, (s, _) in index["figures"].items()}
    problems, counted = [], {"paper": 0, "code": 0}
    for name in ("paper", "reference"):
        recipe = load_recipe(name)
        entries = {**recipe["training"], **recipe["features"]}
        entries |= {f"extra_rows.{k}": row for k, row in recipe.get("extra_rows", {}).items()}
        for key, entry in entries.items():
            source = entry["source"]
            lines = cited_code_lines(source)
            if lines and commit not in source.split(lines[0][0])[0]:
                problems.append(f"{name} {key}: cites {lines[0][0]} without {commit} before it")
            for path, first, last in lines:
                length = code["files"].get(path, {}).get("lines")
                if length is None or not 1 <= first <= last <= length:
                    problems.append(f"{name} {key}: {path}:{first}-{last} is not in {commit} ({length} lines)")
            counted["code"] += len(lines)
            if name == "reference" or source.startswith("paper silent"):
                if not source.startswith(commit if name == "reference" else "paper silent") or not lines:
                    problems.append(f"{name} {key}: no {commit} file:line: {source}")
                continue
            if not source.startswith(("paper ", "aoqzhu/")):
                problems.append(f"{name} {key}: neither the paper nor the code: {source}")
            parts = cited_paper_parts(re.sub(r"spec \d+", "", source.split(commit)[0]))  # not the spec's sections
            if not source.startswith("aoqzhu/") and not any(kind != "in" for kind, _ in parts):
                problems.append(f"{name} {key}: cites no section, equation, table or figure: {source}")
            for kind, number in parts:
                if kind == "section" and number not in index["sections"]:
                    problems.append(f"{name} {key}: no section {number} in the paper")
                elif kind in ("eq", "table", "fig") and (kind, number) not in where:
                    problems.append(f"{name} {key}: no {kind} {number} in the paper")
                elif kind == "in":
                    section, kind_, n = number.split()
                    if where.get((kind_, n)) not in (section, None):
                        problems.append(f"{name} {key}: {kind_} {n} is in section {where[(kind_, n)]}, not {section}")
                counted["paper"] += kind != "in"
    assert not problems, "\n".join(problems)
    assert counted["paper"] > 40 and counted["code"] > 80  # the parsers found the citations


def test_the_citation_check_catches_a_missing_section_equation_and_line():
    assert cited_paper_parts("paper 3.3 Eq. 7 (LN); 4.4 Table 3 and Fig. 4") == [
        ("section", "3.3"), ("in", "3.3 eq 7"), ("eq", "7"), ("section", "4.4"), ("in", "4.4 table 3"),
        ("table", "3"), ("fig", "4")]
    assert ("eq", "18") in cited_paper_parts("paper 3.5 Eq. 17-18") and ("section", "4.7") not in cited_paper_parts(
        "paper 4.7")  # 4.7 is no section number the grammar takes: the source then cites nothing and fails
    assert cited_code_lines("aoqzhu/KEBR@171de2d main.py:85-86, models.py:104 and 105-106") == [
        ("main.py", 85, 86), ("models.py", 104, 104), ("models.py", 105, 106)]


def test_recipe_names_are_the_schemas():
    """paper_recipe.name takes exactly the recipes of kebr/recipes/ and none."""
    assert set(_schema()["properties"]["paper_recipe"]["properties"]["name"]["enum"]) == {*recipe_names(), "none"}
    assert recipe_names() == ["paper", "reference"]


def test_a_paper_tables_file_names_its_recipe_and_other_recipes_are_refused():
    paper, reference = paper_config(), paper_config(paper_recipe={"name": "reference"})
    own = paper_config(paper_recipe={"name": "none"})
    assert [table_file("table2", c) for c in (paper, reference, own)] == ["table2-paper", "table2-reference",
                                                                           "table2-config"]
    assert table_file("demo", reference) == "demo" and table_of_file("demo", paper) == "demo"
    assert table_of_file("gsweep-reference", reference) == "gsweep"
    for stem, message in [("table2-reference", "set paper_recipe.name: reference"),
                          ("table2-config", "set paper_recipe.name: none"),
                          ("table2", "a paper table's file names its recipe: table2-paper"),
                          ("table2-nope", "unknown recipe 'nope'"), ("demo-paper", "only the paper tables")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            table_of_file(stem, paper)


def test_reference_recipe_runs_the_code_and_its_header_says_what_set_each_difference():
    config = paper_config(paper_recipe={"name": "reference"})
    rows = table_rows("table2", config)
    assert [r["variant"] for r in rows] == ["reference-full"] * 4  # no extra rows: every row is the code's
    full = recipe(config, "reference-full", "mosi")
    assert (full["model"]["residual"], full["finetune"]["lr_fusion"], full["finetune"]["select_by"],
            full["finetune"]["seeds"]) == ("identity", 5e-6, "valid_loss_reference", [666])
    pre = recipe(config, "reference-full", "voxceleb1")["pretrain"]["mcc"]
    assert (pre["variant"], pre["g"], pre["weight"]) == ("reference", 0.25, 0.5)
    title, header = table_header("table2", config, rows)
    assert title.startswith("table2: recipe reference, ")
    assert "`kebr config-check --recipe reference` lists each of its values with its source." in header[0]
    residual = next(line for line in header if line.startswith("- `model.residual`"))
    assert residual.startswith("- `model.residual`: identity (paper: layernorm, paper 3.3 Eq. 7")
    assert residual.endswith("set by recipe reference (aoqzhu/KEBR@171de2d models.py:105 (+ text; the LN form is "
                             "commented out, models.py:104)))")
    assert describe(config, "reference").splitlines()[3].split()[:2] == ["key", "reference"]
