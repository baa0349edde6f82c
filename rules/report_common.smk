# Functions of rules/report.smk (Snakemake's lint keeps functions and rules in separate files).
import sys

from kebr.deviations import announce
from kebr.variants import pretraining_source
from kebr.variants import table_file


def figure(path, caption, category, subcategory, **labels):
    """A PNG figure for the report (its SVG twin is written beside it, not shown twice)."""
    return report(
        path,
        caption=f"../report/{caption}.rst",
        category=category,
        subcategory=subcategory,
        labels=labels or None,
    )


def table_files(table):
    """Everything a table target brings: the table (its file names the recipe: kebr/recipe.py
    table_file), its figure, the training curves of each of its runs, the plots of each dataset it
    reads, and the config page."""
    stem = table_file(table, config)
    files = [paths.table(RESULTS, stem, "md"), paths.table_plot(RESULTS, stem, "png")]
    datasets = []
    for row in table_runs(table, config):
        source = pretraining_source(row["pretrain"], row["variant"])
        files.append(
            paths.finetune_plot(RESULTS, row["finetune"], source, row["variant"], "png")
        )
        datasets.append(row["finetune"])
        if source != "none":
            pvariant = pretrain_variant(row["variant"])
            files.append(paths.pretrain_plot(RESULTS, source, pvariant, "png"))
            datasets.append(source)
    for dataset in dict.fromkeys(datasets):
        files += [
            paths.dataset_plot(RESULTS, dataset, name) for name in DATASET_FIGURES
        ]
    return list(dict.fromkeys(files)) + [paths.config_page(RESULTS)]


def targets_of(*tables):
    def files(wildcards):
        # A paper table says which recipe it runs and how it deviates (kebr/deviations.py), here while
        # the DAG is built, so a dry run shows it.
        note = announce(config, tables)
        if note:
            print(note, file=sys.stderr)
        return [f for table in tables for f in table_files(table)]

    return files


def finetune_seed_metrics(wildcards):
    """metrics.json of every seed of one fine-tuning recipe (the seeds its recipe runs)."""
    seeds = recipe(config, wildcards.variant, wildcards.dataset)["finetune"]["seeds"]
    pretrained = pretraining_source(wildcards.pretrained, wildcards.variant)
    return [
        paths.finetune_metrics(
            RESULTS, wildcards.dataset, pretrained, wildcards.variant, seed
        )
        for seed in seeds
    ]


DATASET_FIGURES = ("clips.png", "clips.html", "durations.png", "features.png")
