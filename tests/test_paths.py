"""kebr/paths.py: every results path, for the rules (wildcard placeholders) and the code (real values).

The expected strings are the ones the rules and the code spelled by hand before kebr/paths.py: the
DAG, the files and Snakemake's job names depend on them staying exactly the same."""

import inspect
import re
from pathlib import Path

import pytest

from kebr import paths

REPO = Path(__file__).resolve().parents[1]

# (function, its arguments as a rule passes them, the path). A "{name}" argument is a wildcard.
CASES = [
    (paths.resolved_config, ("results", "{fingerprint}"), "results/config/{fingerprint}.yaml"),
    (paths.dataset_dir, ("results", "{dataset}"), "results/{dataset}"),
    (paths.plan_dir, ("results", "{dataset}"), "results/{dataset}/plan"),
    (paths.shard_plan, ("results/{dataset}/plan", "{shard}"), "results/{dataset}/plan/{shard}.tsv"),
    (paths.shard_arrays, ("results/{dataset}/plan", "{shard}"), "results/{dataset}/plan/{shard}.mmsa.h5"),
    (paths.plan, ("results", "{dataset}", "{shard}"), "results/{dataset}/plan/{shard}.tsv"),
    (paths.plan_arrays, ("results", "{dataset}", "{shard}"), "results/{dataset}/plan/{shard}.mmsa.h5"),
    (paths.stage_output, ("results", "{dataset}", "asr", "{shard}"), "results/{dataset}/asr/{shard}.h5"),
    (paths.stage_output, ("results", "{dataset}", "audio", "{shard}"), "results/{dataset}/audio/{shard}.h5"),
    (paths.stage_output, ("results", "{dataset}", "visual", "{shard}"), "results/{dataset}/visual/{shard}.h5"),
    (paths.shard, ("results", "{dataset}", "{shard}"), "results/{dataset}/shards/{shard}.h5"),
    (paths.status_dir, ("results", "{dataset}"), "results/{dataset}/status"),
    (paths.status, ("results", "{dataset}", "{shard}"), "results/{dataset}/status/{shard}.tsv"),
    (paths.clips, ("results", "{dataset}"), "results/{dataset}/clips.tsv"),
    (paths.clips_summary, ("results", "{dataset}"), "results/{dataset}/clips_summary.tsv"),
    (paths.lm_cache_dir, ("results", "{dataset}"), "results/{dataset}/lm_cache"),
    (paths.pretrain_run_dir, ("results", "{dataset}", "{pvariant}"), "results/pretrain/{dataset}/{pvariant}"),
    (paths.pretrain_marker, ("results/pretrain/{dataset}/{pvariant}",), "results/pretrain/{dataset}/{pvariant}/final.json"),
    (paths.pretrain_marker, ("results/pretrain/{dataset}/{pvariant}", "{epoch}"),
     "results/pretrain/{dataset}/{pvariant}/until-epoch{epoch}.json"),
    (paths.pretrain_final, ("results", "{dataset}", "{pvariant}"), "results/pretrain/{dataset}/{pvariant}/final.json"),
    (paths.pretrain_part, ("results", "{dataset}", "{pvariant}", "{epoch}"),
     "results/pretrain/{dataset}/{pvariant}/until-epoch{epoch}.json"),
    (paths.finetune_run_dir, ("results", "{dataset}", "{pretrained}", "{variant}", "{seed}"),
     "results/finetune/{dataset}/{pretrained}/{variant}/seed{seed}"),
    (paths.run_metrics, ("{run}",), "{run}/metrics.json"),
    (paths.run_predictions, ("{run}",), "{run}/predictions.csv"),
    (paths.finetune_metrics, ("results", "{dataset}", "{pretrained}", "{variant}", "{seed}"),
     "results/finetune/{dataset}/{pretrained}/{variant}/seed{seed}/metrics.json"),
    (paths.finetune_predictions, ("results", "{dataset}", "{pretrained}", "{variant}", "{seed}"),
     "results/finetune/{dataset}/{pretrained}/{variant}/seed{seed}/predictions.csv"),
    (paths.tables_dir, ("results",), "results/tables"),
    (paths.table_in, ("results/tables", "{table}", "md"), "results/tables/{table}.md"),
    (paths.table, ("results", "{table}", "md"), "results/tables/{table}.md"),
    (paths.table, ("results", "{table}", "csv"), "results/tables/{table}.csv"),
    (paths.plots_dir, ("results",), "results/plots"),
    (paths.dataset_plot, ("results", "{dataset}", "clips.png"), "results/plots/{dataset}/clips.png"),
    (paths.dataset_plot, ("results", "{dataset}", ""), "results/plots/{dataset}/"),  # multiext's prefix
    (paths.pretrain_plot, ("results", "{dataset}", "{pvariant}", "svg"), "results/plots/pretrain/{dataset}/{pvariant}.svg"),
    (paths.finetune_plot, ("results", "{dataset}", "{pretrained}", "{variant}", "png"),
     "results/plots/finetune/{dataset}/{pretrained}/{variant}.png"),
    (paths.table_plot, ("results", "{table}", "html"), "results/plots/tables/{table}.html"),
    (paths.config_page, ("results",), "results/plots/config.html"),
    (paths.logs_dir, ("results",), "results/logs"),
    (paths.benchmarks_dir, ("results",), "results/benchmarks"),
    (paths.log, ("results", "demo_corpus"), "results/logs/demo_corpus.log"),
    (paths.log, ("results", "{dataset}", "asr", "{shard}"), "results/logs/{dataset}/asr/{shard}.log"),
    (paths.log, ("results", "pretrain", "{dataset}", "{pvariant}.until-epoch{epoch}"),
     "results/logs/pretrain/{dataset}/{pvariant}.until-epoch{epoch}.log"),
    (paths.benchmark, ("results", "finetune", "{dataset}", "{pretrained}", "{variant}", "seed{seed}"),
     "results/benchmarks/finetune/{dataset}/{pretrained}/{variant}/seed{seed}.tsv"),
    (paths.benchmark, ("results", "plots", "config"), "results/benchmarks/plots/config.tsv"),
]
# Real values for the wildcards (ints where the code passes ints).
VALUES = {"fingerprint": "0123abcd", "dataset": "mosi", "shard": "00007", "pvariant": "paper-full", "epoch": 3,
          "pretrained": "voxceleb1", "variant": "paper-full", "seed": 4, "table": "table2-paper",
          "run": "out/finetune/mosi/none/no_pretrain/seed0"}


def real(argument: str) -> str | int:
    """A rule's argument with its wildcards filled in; a lone wildcard of an int value becomes the int."""
    lone = re.fullmatch(r"\{(\w+)\}", argument)
    if lone and isinstance(VALUES[lone.group(1)], int):
        return VALUES[lone.group(1)]
    return argument.format(**VALUES)


@pytest.mark.parametrize(("function", "arguments", "expected"), CASES,
                         ids=[f"{f.__name__}-{i}" for i, (f, _, _) in enumerate(CASES)])
def test_placeholders_give_the_rules_patterns(function, arguments, expected):
    assert function(*arguments) == expected


@pytest.mark.parametrize(("function", "arguments", "expected"), CASES,
                         ids=[f"{f.__name__}-{i}" for i, (f, _, _) in enumerate(CASES)])
def test_real_values_give_the_files_the_rules_make(function, arguments, expected):
    # The code's call names the file Snakemake made from the rule's pattern, also from a Path results folder.
    assert function(*[real(a) for a in arguments]) == expected.format(**VALUES)
    if arguments[0] == "results":
        assert function(Path("results"), *[real(a) for a in arguments[1:]]) == expected.format(**VALUES)


def test_every_path_function_has_a_case():
    functions = {name for name, f in inspect.getmembers(paths, inspect.isfunction)
                 if f.__module__ == paths.__name__ and not name.startswith("_")}
    assert functions - {"planned_shards"} == {f.__name__ for f, _, _ in CASES}


def test_concrete_calls_of_the_code():
    assert paths.finetune_run_dir("out", "mosi", "none", "no_pretrain", 0) == "out/finetune/mosi/none/no_pretrain/seed0"
    assert paths.pretrain_part("out", "voxceleb1", "full", 12) == "out/pretrain/voxceleb1/full/until-epoch12.json"
    assert paths.pretrain_marker(Path("out/pretrain/voxceleb1/full")) == "out/pretrain/voxceleb1/full/final.json"
    assert Path(paths.shard("out/", "mosi", "00000")) == Path("out") / "mosi" / "shards" / "00000.h5"


def test_planned_shards_lists_the_plan_tables_only(tmp_path):
    assert paths.planned_shards(tmp_path, "mosi") == []  # not planned yet
    plan = Path(paths.plan_dir(tmp_path, "mosi"))
    plan.mkdir(parents=True)
    for name in ("00001.tsv", "00000.tsv", "00000.mmsa.h5"):
        (plan / name).write_text("")
    assert paths.planned_shards(tmp_path, "mosi") == ["00000", "00001"]
    assert Path(paths.plan(tmp_path, "mosi", "00001")).is_file()


def test_an_unknown_stage_or_an_unnamed_log_is_refused():
    with pytest.raises(ValueError, match="unknown per-shard stage 'assemble'"):
        paths.stage_output("results", "mosi", "assemble", "00000")
    with pytest.raises(ValueError, match="non-empty parts"):
        paths.log("results")
    with pytest.raises(ValueError, match="non-empty parts"):
        paths.benchmark("results", "plots", "")


def code_lines(path: Path) -> list[tuple[int, str]]:
    """The lines of a Snakefile or module without their comments and docstring-only lines."""
    return [(n, line.split("#")[0]) for n, line in enumerate(path.read_text().splitlines(), 1)
            if not line.lstrip().startswith(("#", '"""'))]


def test_the_rules_build_no_results_path_by_hand():
    hand_built = re.compile(r"\{RESULTS\}|\{PLOTS\}|\bPLOTS\b|config\[.results.\]\}|[\"']results/|/(logs|benchmarks)/")
    found = [f"{path.relative_to(REPO)}:{n}: {line.strip()}"
             for path in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]
             for n, line in code_lines(path) if hand_built.search(line)]
    assert not found, "spell these with kebr/paths.py:\n" + "\n".join(found)


def test_the_code_builds_no_results_path_by_hand():
    hand_built = re.compile(r"Path\(config\[.results.\]\)|config\[.results.\]\}/|Path\(results\) /")
    found = [f"{path.relative_to(REPO)}:{n}: {line.strip()}"
             for path in sorted((REPO / "kebr").rglob("*.py")) if path.name != "paths.py"
             for n, line in code_lines(path) if hand_built.search(line)]
    assert not found, "spell these with kebr/paths.py:\n" + "\n".join(found)
