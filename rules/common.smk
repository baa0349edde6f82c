from kebr.config import write_resolved_config
from kebr.experiments import finetune_run_dir, pretrain_variant, recipe, table_runs

RESULTS = config["results"]
DATASETS = list(config["datasets"])
# An mmsa_pickle dataset brings its transcripts and features (kebr/mmsa.py): rule mmsa_import makes
# its stage outputs in place of asr, audio_features and visual_features.
PICKLED = [d for d in DATASETS if config["datasets"][d]["layout"] == "mmsa_pickle"]
EXTRACTED = [d for d in DATASETS if d not in PICKLED]
# The CLI jobs read the validated config, --config overrides included, from this file.
CONFIG = str(write_resolved_config(config, f"{RESULTS}/config.resolved.yaml"))


wildcard_constraints:
    dataset="|".join(DATASETS) or "none",
    shard=r"\d+",


def one_of(names):
    """A wildcard pattern matching exactly these names (none: nothing)."""
    return "|".join(names) or "(?!)"


def demo_inputs(wildcards):
    """A demo dataset is written by the demo_corpus rule before it is planned."""
    return (
        ["demo_data/README.txt"]
        if config["datasets"][wildcards.dataset]["demo"]
        else []
    )


def mmsa_pickle_input(wildcards):
    """The pickle an mmsa_pickle dataset is planned (and imported) from."""
    dataset = config["datasets"][wildcards.dataset]
    return [dataset["pickle"]] if dataset["layout"] == "mmsa_pickle" else []


def plan_mem_mb(wildcards, input):
    """A plan holds its dataset's clip list; an mmsa_pickle plan holds the whole unpickled file, which
    takes about its size in memory (bench/mmsa.py)."""
    return 4000 + round(1.2 * input.size_mb)


def shards_of(dataset):
    """Shard names, known once the dataset's plan checkpoint has run."""
    plan_dir = checkpoints.plan.get(dataset=dataset).output[0]
    return sorted(glob_wildcards(f"{plan_dir}/{{shard}}.tsv").shard)


wildcard_constraints:
    pretrained="|".join(DATASETS + ["none"]),
    variant=r"[A-Za-z0-9_.\-]+",
    pvariant=r"[A-Za-z0-9_.\-]+",
    seed=r"\d+",
    table=r"[a-z0-9]+",


def pretrained_input(wildcards):
    """The pretraining run a fine-tuning run starts from (none: ablations without pretraining)."""
    if wildcards.pretrained == "none":
        return []
    return f"{RESULTS}/pretrain/{wildcards.pretrained}/{pretrain_variant(wildcards.variant)}/final.json"


def table_metrics(wildcards):
    return [
        str(p)
        for row in table_runs(wildcards.table, config)
        for p in row["metrics_files"]
    ]


def finetune_metrics(dataset):
    """`finetune_<dataset>`: the full recipe over every seed, from the dataset's `pretrained_on`."""
    source = config["datasets"][dataset].get("pretrained_on")
    variant = "full" if source else "no_pretrain"
    return [
        str(finetune_run_dir(RESULTS, dataset, source, variant, seed) / "metrics.json")
        for seed in recipe(config, variant, dataset)["finetune"]["seeds"]
    ]
