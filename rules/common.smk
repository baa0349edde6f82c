from kebr.config import write_resolved_config

RESULTS = config["results"]
DATASETS = list(config["datasets"])
# The CLI jobs read the validated config, --config overrides included, from this file.
CONFIG = str(write_resolved_config(config, f"{RESULTS}/config.resolved.yaml"))


wildcard_constraints:
    dataset="|".join(DATASETS) or "none",
    shard=r"\d+",


def demo_inputs(wildcards):
    """A demo dataset is written by the demo_corpus rule before it is planned."""
    return ["demo_data/README.txt"] if config["datasets"][wildcards.dataset]["demo"] else []


def shards_of(dataset):
    """Shard names, known once the dataset's plan checkpoint has run."""
    plan_dir = checkpoints.plan.get(dataset=dataset).output[0]
    return sorted(glob_wildcards(f"{plan_dir}/{{shard}}.tsv").shard)
