# HDF5 shards -> pretraining -> fine-tuning over seeds -> the paper's tables (issue: training).
# A training rule's `fingerprint` param hashes what its runs learn from the config (not the seed list,
# device or workers), so an edit reruns the runs it changes and new seeds run alone.
# Runs live at results/pretrain/<dataset>/<variant>/ and
# results/finetune/<dataset>/<pretraining dataset | none>/<variant>/seed<seed>/ (kebr/paths.py).


wildcard_constraints:
    epoch=r"\d+",


rule pretrain_part:
    input:
        clips=paths.clips(RESULTS, "{dataset}"),
        previous=lambda wc: previous_pretrain_part(
            config, wc.dataset, wc.pvariant, int(wc.epoch)
        ),
    output:
        paths.pretrain_part(RESULTS, "{dataset}", "{pvariant}", "{epoch}"),
    log:
        paths.log(RESULTS, "pretrain", "{dataset}", "{pvariant}.until-epoch{epoch}"),
    benchmark:
        paths.benchmark(
            RESULTS, "pretrain", "{dataset}", "{pvariant}.until-epoch{epoch}"
        )
    conda:
        "../envs/kebr.yaml"
    threads: threads(config, "pretrain")
    resources:
        mem_mb=mem_mb(config, "pretrain"),
        runtime=pretrain_runtime(config),
        gpu=gpus(config, "pretrain"),
    params:
        fingerprint=training_params("pretrain"),
        run_dir=subpath(output[0], parent=True),
    shell:
        'python -m kebr pretrain --config "$KEBR_CONFIG" --dataset {wildcards.dataset:q}'
        " --variant {wildcards.pvariant:q} --until-epoch {wildcards.epoch:q} --out {params.run_dir:q} > {log:q} 2>&1"


rule pretrain:
    input:
        clips=paths.clips(RESULTS, "{dataset}"),
        previous=lambda wc: previous_pretrain_part(
            config, wc.dataset, wc.pvariant, None
        ),
    output:
        paths.pretrain_final(RESULTS, "{dataset}", "{pvariant}"),
    log:
        paths.log(RESULTS, "pretrain", "{dataset}", "{pvariant}"),
    benchmark:
        paths.benchmark(RESULTS, "pretrain", "{dataset}", "{pvariant}")
    conda:
        "../envs/kebr.yaml"
    threads: threads(config, "pretrain")
    resources:
        mem_mb=mem_mb(config, "pretrain"),
        runtime=pretrain_runtime(config),
        gpu=gpus(config, "pretrain"),
    params:
        fingerprint=training_params("pretrain"),
        run_dir=subpath(output[0], parent=True),
    shell:
        'python -m kebr pretrain --config "$KEBR_CONFIG" --dataset {wildcards.dataset:q}'
        " --variant {wildcards.pvariant:q} --out {params.run_dir:q} > {log:q} 2>&1"


rule finetune:
    input:
        shards=paths.clips(RESULTS, "{dataset}"),
        pretrained=pretrained_input,
    output:
        metrics=paths.finetune_metrics(
            RESULTS, "{dataset}", "{pretrained}", "{variant}", "{seed}"
        ),
        predictions=paths.finetune_predictions(
            RESULTS, "{dataset}", "{pretrained}", "{variant}", "{seed}"
        ),
    log:
        paths.log(
            RESULTS, "finetune", "{dataset}", "{pretrained}", "{variant}", "seed{seed}"
        ),
    benchmark:
        paths.benchmark(
            RESULTS, "finetune", "{dataset}", "{pretrained}", "{variant}", "seed{seed}"
        )
    conda:
        "../envs/kebr.yaml"
    threads: threads(config, "finetune")
    resources:
        mem_mb=mem_mb(config, "finetune"),
        runtime=runtime(config, "finetune"),
        gpu=gpus(config, "finetune"),
    params:
        fingerprint=training_params("finetune"),
        run_dir=subpath(output.metrics, parent=True),
        pretrained=lambda wc, input: (
            subpath(input.pretrained, parent=True) if input.pretrained else "none"
        ),
    shell:
        'python -m kebr finetune --config "$KEBR_CONFIG" --dataset {wildcards.dataset:q}'
        " --pretrained {params.pretrained:q} --variant {wildcards.variant:q} --seed {wildcards.seed:q}"
        " --out {params.run_dir:q} > {log:q} 2>&1"


rule table:
    input:
        table_metrics,
    output:
        md=paths.table(RESULTS, "{table}", "md"),
        csv=paths.table(RESULTS, "{table}", "csv"),
    log:
        paths.log(RESULTS, "tables", "{table}"),
    benchmark:
        paths.benchmark(RESULTS, "tables", "{table}")
    conda:
        "../envs/kebr.yaml"
    resources:
        mem_mb=mem_mb(config, "table"),
        runtime=runtime(config, "table"),
    params:
        fingerprint=table_fingerprint,
        name=table_name,
    shell:
        'python -m kebr table {params.name:q} --config "$KEBR_CONFIG"'
        " --out-md {output.md:q} --out-csv {output.csv:q} > {log:q} 2>&1"


# The table targets (table2, ..., demo) live in rules/report.smk with the figures they bring.


for _dataset in DATASETS:

    rule:
        name:
            f"pretrain_{_dataset}"
        input:
            paths.pretrain_final(RESULTS, _dataset, "full"),
        localrule: True

    rule:
        name:
            f"finetune_{_dataset}"
        input:
            finetune_metrics(_dataset),
        localrule: True
