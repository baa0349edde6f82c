"""The figures and the Snakemake report of the small demo (the `demo_run` fixture runs the `demo`
target: tables, figures and the demo g sweep): `snakemake --report` holds every figure and table
byte for byte, the figures draw the numbers of the files they come from, and they read in greyscale."""

import base64
import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import av
import h5py
import numpy as np
import pytest
from PIL import Image

from kebr.plots import clips, tables, training
from kebr.clips import SkipKind
from kebr.config import load_config
from kebr.experiments import table_runs
from kebr.ingest import read_clip_table

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
DATASETS = ("demo_labelled", "demo_unlabelled")
RUNS = ("finetune/demo_labelled/demo_unlabelled/full", "finetune/demo_labelled/none/no_pretrain",
        "pretrain/demo_unlabelled/full")
FIGURES = ([f"plots/{d}/{f}" for d in DATASETS for f in ("clips.png", "clips.html", "durations.png", "features.png")]
           + [f"plots/{run}.png" for run in RUNS]
           + [f"plots/tables/{t}.{ext}" for t in ("demo", "demo_gsweep") for ext in ("png", "html")]
           + ["plots/config.html"])


@pytest.fixture(scope="module")
def report(demo_run):
    """The report's results: {path: entry with data_uri and caption}."""
    result = subprocess.run(SNAKEMAKE + ["--report", "report.html"], cwd=demo_run, env=ENV, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    page = (demo_run / "report.html").read_text()
    start = page.rindex("var results = {") + len("var results = ")
    results, _ = json.JSONDecoder().raw_decode(page[start:])
    return results


def test_report_holds_every_figure_table_and_the_config(demo_run, report):
    for name in FIGURES:
        entry = report[f"out/{name}"]
        data = base64.b64decode(entry["data_uri"].split("base64,", 1)[1])
        assert data == (demo_run / "out" / name).read_bytes(), name
        assert len(re.sub("<[^>]+>", "", entry["caption"]).split()) > 15, f"{name}: no caption to read it by"
    assert "demo_labelled / demo_unlabelled / full" in (demo_run / "out/plots/tables/demo.html").read_text()
    assert "finetune:" in (demo_run / "out/plots/config.html").read_text()  # defaults filled in
    assert "config.yaml" in (demo_run / "report.html").read_text()  # Snakemake's own config record
    # every figure has its SVG twin
    assert all((demo_run / "out" / name).with_suffix(".svg").exists() for name in FIGURES if name.endswith(".png"))


def test_figures_read_in_greyscale(demo_run):
    for name in FIGURES:
        if name.endswith(".png"):
            rgb = np.asarray(Image.open(demo_run / "out" / name).convert("RGB")).astype(int)
            assert np.abs(rgb - rgb.mean(axis=2, keepdims=True)).max() <= 2, f"{name} has colour"


def test_documented_outputs_exist_for_the_demo(demo_run):
    """The table of per-dataset outputs (docs/corpora.md) names files the demo run wrote."""
    corpora = (REPO / "docs" / "corpora.md").read_text()
    section = corpora.split("Outputs per dataset, under `results/<dataset>/`:")[1].split("\n\n")[1]
    rows = re.findall(r"^\| `([^`]+)`[^|]* \| (.*) \|$", section, re.M)
    paths = [path for path, what in rows if " only:" not in what]  # e.g. "`mmsa_pickle` only: ..."
    assert len(paths) >= 4
    for path in paths:
        assert list((demo_run / "out" / "demo_labelled").glob(re.sub(r"<\w+>", "*", path))), path


def test_clip_figure_counts_every_clip(demo_run):
    clips_tsv = demo_run / "out/demo_labelled/clips.tsv"
    with clips_tsv.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    ok = sum(r["status"] == "ok" for r in rows)
    svg = (demo_run / "out/plots/demo_labelled/clips.svg").read_text()
    assert f"demo_labelled: {len(rows)} input clips, {ok} ok, {len(rows) - ok} not ok" in svg


def test_durations_come_from_clips_tsv_when_it_records_them(demo_run, tmp_path):
    """A clips.tsv with `kind` and `duration_s` (here: each clip's media duration, read again) is drawn as is."""
    plan = [c for p in sorted((demo_run / "out/demo_labelled/plan").glob("*.tsv")) for c in read_clip_table(p)]
    durations = {}
    for clip in plan:
        with av.open(demo_run / clip.video) as container:  # plan paths are relative to the run folder
            durations[clip.clip_id] = container.duration / 1e6
    clips_tsv = tmp_path / "clips.tsv"
    with (demo_run / "out/demo_labelled/clips.tsv").open() as f, clips_tsv.open("w") as out:
        reader = csv.DictReader(f, delimiter="\t")
        rows = list(reader)
        fields = reader.fieldnames + [f for f in ("kind", "duration_s") if f not in reader.fieldnames]
        writer = csv.DictWriter(out, fields, delimiter="\t")
        writer.writeheader()
        # the first clip marked skipped with a detailed reason, the second without a readable duration
        skipped, unreadable = rows[0]["clip_id"], rows[1]["clip_id"]
        rows[0].update(status="skipped", reason="media: zero-byte file: /x/1.mp4", kind="zero_byte")
        for row in rows:
            writer.writerow({**row, "duration_s": "" if row["clip_id"] == unreadable else durations[row["clip_id"]]})
    summary = clips.summarize_clips(clips_tsv)
    assert summary["counts"][("skipped", SkipKind.ZERO_BYTE, "media: zero-byte file")] == 1
    drawn = clips.plot_durations(summary, [], tmp_path / "durations", "demo_labelled")
    expected = [d for clip_id, d in durations.items() if clip_id not in (skipped, unreadable)]
    assert drawn["source"] == "clips.tsv" and sorted(drawn["ok"]) == pytest.approx(sorted(expected))
    assert drawn["not ok"] == pytest.approx([durations[skipped]]) and summary["no_duration"] == 1
    assert "1 clips without a duration_s" in (tmp_path / "durations.svg").read_text()


def test_feature_statistics_are_over_real_frames(demo_run):
    shards = sorted((demo_run / "out/demo_labelled/shards").glob("*.h5"))
    stats = clips.feature_stats(shards, max_shards=20)
    frames = []
    for path in shards:
        with h5py.File(path) as f:
            frames += [x[:n] for x, n in zip(f["audio/features"][:], f["audio/lengths"][:])]
    frames = np.concatenate(frames)
    assert stats["audio"]["frames"] == len(frames)
    np.testing.assert_allclose(stats["audio"]["mean"], frames.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["audio"]["std"], frames.std(0), rtol=1e-4, atol=1e-5)
    assert len(stats["face_share"]) == stats["clips"] and 0 < np.mean(stats["face_share"]) <= 1


def test_training_and_gsweep_figures_draw_the_runs(demo_run, tmp_path):
    seeds = sorted((demo_run / "out/finetune/demo_labelled/demo_unlabelled/full").glob("seed*"))
    drawn = training.plot_training(seeds, tmp_path / "curves", "test")
    for seed in seeds:
        metrics = json.loads((seed / "metrics.json").read_text())
        assert min(drawn[seed.name]["valid_mae"]) == pytest.approx(metrics["best_valid_mae"])
    config = load_config(demo_run / "config.yaml")
    config["results"] = str(demo_run / "out")
    sweep = tables.plot_gsweep(demo_run / "out/tables/demo_gsweep.csv", tmp_path / "g", "t")
    assert sweep["MOSEI"] is None  # the demo plays MOSI only: its MOSEI panel says "no runs"
    assert "MOSEI: no runs" in (tmp_path / "g.svg").read_text()
    for g, row in sorted(zip(config["demo_gsweep"], table_runs("demo_gsweep", config))):
        f1 = [100 * json.loads(Path(p).read_text())["f1_has0"] for p in row["metrics_files"]]
        i = sweep["MOSI"]["g"].index(g)
        assert sweep["MOSI"]["f1_has0"]["mean"][i] == pytest.approx(np.mean(f1))
        assert sweep["MOSI"]["f1_has0"]["std"][i] == pytest.approx(np.std(f1))
    table = tables.plot_table(demo_run / "out/tables/demo.csv", tmp_path / "t", "t")
    # the third row, text_only, is a reference row: not the paper's, so without paper numbers
    assert table["mae"]["paper"] == [0.702, 0.705, None] and table["acc2_has0"]["paper"] == [84.4, 84.11, None]
