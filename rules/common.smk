from kebr import paths
from kebr.config import fingerprint
from kebr.deviations import table_header
from kebr.experiments import table_runs, training_fingerprint
from kebr.variants import (
    DEMO_TABLES,
    PAPER_TABLES,
    pretrain_variant,
    pretraining_source,
    recipe,
    table_of_file,
    table_rows,
)
from kebr.fingerprints import stage_fingerprint
from kebr.ingest import check_sources

RESULTS = config["results"]
DATASETS = list(config["datasets"])
# An mmsa_pickle dataset brings its transcripts and features (kebr/mmsa.py): rule mmsa_import makes
# its stage outputs in place of asr, audio_features and visual_features.
PICKLED = [d for d in DATASETS if config["datasets"][d]["layout"] == "mmsa_pickle"]
EXTRACTED = [d for d in DATASETS if d not in PICKLED]


wildcard_constraints:
    dataset="|".join(DATASETS) or "none",
    shard=r"\d+",


def one_of(names):
    """A wildcard pattern matching exactly these names (none: nothing)."""
    return "|".join(names) or "(?!)"


def plan_inputs(wildcards):
    """A demo dataset is written by the demo_corpus rule before it is planned; any other dataset's
    root or manifest must exist now, so a wrong path fails before any job is scheduled (only for the
    datasets the requested targets need)."""
    dataset = config["datasets"][wildcards.dataset]
    if dataset["demo"]:
        return ["demo_data/README.txt"]
    check_sources(wildcards.dataset, dataset)
    return []


def stage_params(stage):
    """A rule's `fingerprint` param: the config keys its stage reads (kebr.config.STAGE_KEYS)."""
    return lambda wildcards: stage_fingerprint(config, stage, wildcards.dataset)


def mmsa_pickle_input(wildcards):
    """The pickle an mmsa_pickle dataset is planned (and imported) from."""
    dataset = config["datasets"][wildcards.dataset]
    return [dataset["pickle"]] if dataset["layout"] == "mmsa_pickle" else []


def shards_of(dataset):
    """Shard names, known once the dataset's plan checkpoint has run."""
    plan_dir = checkpoints.plan.get(dataset=dataset).output[0]
    return sorted(glob_wildcards(paths.shard_plan(plan_dir, "{shard}")).shard)


wildcard_constraints:
    pretrained="|".join(DATASETS + ["none"]),
    variant=r"[A-Za-z0-9_.\-]+",
    pvariant=r"[A-Za-z0-9_.\-]+",
    seed=r"\d+",
    # a table's file name: the table, and for a paper table the recipe (kebr/recipe.py table_file)
    table=r"[a-z0-9_]+(-[a-z0-9_]+)?",


def pretrained_input(wildcards):
    """The pretraining run a fine-tuning run starts from (none: ablations without pretraining)."""
    if wildcards.pretrained == "none":
        return []
    return paths.pretrain_final(
        RESULTS, wildcards.pretrained, pretrain_variant(wildcards.variant)
    )


def training_params(stage):
    """A training rule's `fingerprint` param: what its runs learn from the config (no seeds, device)."""
    return lambda wildcards: training_fingerprint(
        config,
        stage,
        wildcards.pvariant if stage == "pretrain" else wildcards.variant,
        wildcards.dataset,
    )


def table_name(wildcards):
    """The table a results/tables file holds; a paper table of a recipe this config does not run is
    refused with what to set (kebr/recipe.py table_of_file)."""
    return table_of_file(wildcards.table, config)


def table_fingerprint(wildcards):
    """The rows a table reads from the config (datasets, variants, paper numbers) and its header
    (the recipe, the deviations from the paper)."""
    rows = table_rows(table_name(wildcards), config)
    return fingerprint([rows, table_header(table_name(wildcards), config, rows)])


def table_metrics(wildcards):
    return [
        str(p)
        for row in table_runs(table_name(wildcards), config)
        for p in row["metrics_files"]
    ]


def finetune_metrics(dataset):
    """`finetune_<dataset>`: the full recipe over every seed, from the dataset's `pretrained_on`."""
    source = config["datasets"][dataset].get("pretrained_on")
    variant = "full" if source else "no_pretrain"
    return [
        paths.finetune_metrics(
            RESULTS, dataset, pretraining_source(source, variant), variant, seed
        )
        for seed in recipe(config, variant, dataset)["finetune"]["seeds"]
    ]
