"""Every path under the results folder, spelled once, for the rules and the code alike.

The rules call these functions with wildcard placeholders (``stage_output(RESULTS, "{dataset}",
"asr", "{shard}")`` is ``results/{dataset}/asr/{shard}.h5``), the code with real values, so a rule's
output and the file the code reads are the same string. Each function returns a ``str`` (what
Snakemake's input and output take; the code wraps it in a ``Path``) and joins with ``/`` only: a
placeholder passes through unchanged. A few take the folder a command is given (``--out``) rather
than the results folder: the names inside a plan folder or a run directory, spelled once here for
the command that writes them and the rules that ask for them.

The layout (docs/ARCHITECTURE.md)::

    <results>/config/<fingerprint>.yaml                  the resolved config every job reads
    <results>/<dataset>/plan/<shard>.tsv                 (and <shard>.mmsa.h5 of an mmsa_pickle dataset)
    <results>/<dataset>/{asr,audio,visual}/<shard>.h5    the per-shard stage outputs
    <results>/<dataset>/shards/<shard>.h5, status/<shard>.tsv, clips.tsv, clips_summary.tsv, lm_cache/
    <results>/pretrain/<dataset>/<variant>/              final.json, until-epoch<N>.json
    <results>/finetune/<dataset>/<pretrained | none>/<variant>/seed<k>/   metrics.json, predictions.csv
    <results>/tables/<table>.{md,csv}
    <results>/plots/<dataset>/, plots/pretrain/, plots/finetune/, plots/tables/, plots/config.html
    <results>/logs/<job>.log, <results>/benchmarks/<job>.tsv

Imports nothing from kebr (pyproject.toml's import contracts keep it at the bottom).
"""

from __future__ import annotations

from pathlib import Path

# The per-shard stages whose outputs have a folder each under <results>/<dataset>/.
STAGE_OUTPUTS = ("asr", "audio", "visual")


def resolved_config(results: str | Path, fingerprint: str) -> str:
    """The validated config the jobs read (kebr/config.py ``write_resolved_config``)."""
    return f"{results}/config/{fingerprint}.yaml"


# Per dataset: plan, stage outputs, shards, the clip report


def dataset_dir(results: str | Path, dataset: str) -> str:
    """Where every output of one dataset's corpus lives."""
    return f"{results}/{dataset}"


def plan_dir(results: str | Path, dataset: str) -> str:
    """The plan checkpoint's folder: one table per shard."""
    return f"{dataset_dir(results, dataset)}/plan"


def shard_plan(plan_folder: str | Path, shard: str) -> str:
    """A shard's plan table in a plan folder."""
    return f"{plan_folder}/{shard}.tsv"


def shard_arrays(plan_folder: str | Path, shard: str) -> str:
    """An mmsa_pickle shard's arrays beside its plan table (kebr/mmsa.py)."""
    return f"{plan_folder}/{shard}.mmsa.h5"


def plan(results: str | Path, dataset: str, shard: str) -> str:
    return shard_plan(plan_dir(results, dataset), shard)


def plan_arrays(results: str | Path, dataset: str, shard: str) -> str:
    return shard_arrays(plan_dir(results, dataset), shard)


def planned_shards(results: str | Path, dataset: str) -> list[str]:
    """The shards the dataset's plan lists, sorted (none before it is planned)."""
    return sorted(p.stem for p in Path(plan_dir(results, dataset)).glob("*.tsv"))  # shard_plan's names


def stage_output(results: str | Path, dataset: str, stage: str, shard: str) -> str:
    """One shard's output of a per-shard stage (``STAGE_OUTPUTS``)."""
    if stage not in STAGE_OUTPUTS:
        raise ValueError(f"unknown per-shard stage {stage!r}: one of {list(STAGE_OUTPUTS)}")
    return f"{dataset_dir(results, dataset)}/{stage}/{shard}.h5"


def shard(results: str | Path, dataset: str, shard: str) -> str:
    """An assembled shard, what training reads."""
    return f"{dataset_dir(results, dataset)}/shards/{shard}.h5"


def status_dir(results: str | Path, dataset: str) -> str:
    return f"{dataset_dir(results, dataset)}/status"


def status(results: str | Path, dataset: str, shard: str) -> str:
    """An assembled shard's status table (every clip: ok or skipped, and why)."""
    return f"{status_dir(results, dataset)}/{shard}.tsv"


def clips(results: str | Path, dataset: str) -> str:
    """clips.tsv: every planned clip of the dataset with its status."""
    return f"{dataset_dir(results, dataset)}/clips.tsv"


def clips_summary(results: str | Path, dataset: str) -> str:
    return f"{dataset_dir(results, dataset)}/clips_summary.tsv"


def lm_cache_dir(results: str | Path, dataset: str) -> str:
    """The LM-state sidecars of the dataset's shards (kebr/train/lm_cache.py)."""
    return f"{dataset_dir(results, dataset)}/lm_cache"


# Training runs


def pretrain_run_dir(results: str | Path, dataset: str, variant: str) -> str:
    return f"{results}/pretrain/{dataset}/{variant}"


def pretrain_marker(run_dir: str | Path, until_epoch: int | str | None = None) -> str:
    """The file a pretraining job writes last, naming its state: ``final.json``, or for one job of a
    chain (kebr/resources.py ``pretrain_chain``) ``until-epoch<N>.json``."""
    return f"{run_dir}/final.json" if until_epoch is None else f"{run_dir}/until-epoch{until_epoch}.json"


def pretrain_final(results: str | Path, dataset: str, variant: str) -> str:
    return pretrain_marker(pretrain_run_dir(results, dataset, variant))


def pretrain_part(results: str | Path, dataset: str, variant: str, epoch: int | str) -> str:
    return pretrain_marker(pretrain_run_dir(results, dataset, variant), epoch)


def finetune_run_dir(results: str | Path, dataset: str, pretrained: str, variant: str, seed: int | str) -> str:
    """One fine-tuning run; ``pretrained`` is the pretraining dataset, or ``none`` for a variant
    without pretraining (kebr/variants.py ``pretraining_source``)."""
    return f"{results}/finetune/{dataset}/{pretrained}/{variant}/seed{seed}"


def run_metrics(run_dir: str | Path) -> str:
    """A fine-tuning run's test metrics (kebr/train/finetune.py)."""
    return f"{run_dir}/metrics.json"


def run_predictions(run_dir: str | Path) -> str:
    """A fine-tuning run's test predictions, one row per clip (kebr/train/finetune.py)."""
    return f"{run_dir}/predictions.csv"


def finetune_metrics(results: str | Path, dataset: str, pretrained: str, variant: str, seed: int | str) -> str:
    return run_metrics(finetune_run_dir(results, dataset, pretrained, variant, seed))


def finetune_predictions(results: str | Path, dataset: str, pretrained: str, variant: str, seed: int | str) -> str:
    return run_predictions(finetune_run_dir(results, dataset, pretrained, variant, seed))


# Tables and figures


def tables_dir(results: str | Path) -> str:
    return f"{results}/tables"


def table_in(tables_folder: str | Path, stem: str, ext: str) -> str:
    """A table's ``md`` or ``csv`` file in a tables folder (``kebr plots table --tables``); ``stem``
    names the table (and a paper table's recipe: kebr/recipe.py ``table_file``)."""
    return f"{tables_folder}/{stem}.{ext}"


def table(results: str | Path, stem: str, ext: str) -> str:
    return table_in(tables_dir(results), stem, ext)


def plots_dir(results: str | Path) -> str:
    return f"{results}/plots"


def dataset_plot(results: str | Path, dataset: str, name: str) -> str:
    """A figure of one dataset's clips and features, ``name`` its file name (``""``: the folder, with
    its trailing slash)."""
    return f"{plots_dir(results)}/{dataset}/{name}"


def pretrain_plot(results: str | Path, dataset: str, variant: str, ext: str) -> str:
    """The training curves of a pretraining run."""
    return f"{plots_dir(results)}/pretrain/{dataset}/{variant}.{ext}"


def finetune_plot(results: str | Path, dataset: str, pretrained: str, variant: str, ext: str) -> str:
    """The training curves of a fine-tuning recipe over its seeds."""
    return f"{plots_dir(results)}/finetune/{dataset}/{pretrained}/{variant}.{ext}"


def table_plot(results: str | Path, stem: str, ext: str) -> str:
    """A table's figure (png, svg) or page (html)."""
    return f"{plots_dir(results)}/tables/{stem}.{ext}"


def config_page(results: str | Path) -> str:
    """The validated config as an HTML page."""
    return f"{plots_dir(results)}/config.html"


# A job's log and benchmark: ``job`` is its name as path parts, e.g. ("{dataset}", "asr", "{shard}").


def logs_dir(results: str | Path) -> str:
    return f"{results}/logs"


def benchmarks_dir(results: str | Path) -> str:
    """Snakemake's benchmark of every job (bench/asr.py sums them per rule)."""
    return f"{results}/benchmarks"


def log(results: str | Path, *job: str) -> str:
    return f"{logs_dir(results)}/{_job_name(job)}.log"


def benchmark(results: str | Path, *job: str) -> str:
    return f"{benchmarks_dir(results)}/{_job_name(job)}.tsv"


def _job_name(parts: tuple[str, ...]) -> str:
    if not parts or not all(parts):
        raise ValueError(f"a job's log or benchmark needs a name of non-empty parts, not {parts!r}")
    return "/".join(parts)
