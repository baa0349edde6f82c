# Figures and the Snakemake report (issue: report): one `kebr plots` command per rule, every figure
# under results/plots/, each marked with report() and a caption (report/*.rst) saying what to read
# from it. `snakemake --report report.html <target>` after a run collects them into one HTML file.
# The targets people ask for (table2, ...; `demo` in the Snakefile) bring a table with all of its figures.
# Functions: rules/report_common.smk.


report: "../report/workflow.rst"


for _table in PAPER_TABLES:

    rule:
        name:
            _table
        input:
            targets_of(_table),
        localrule: True


rule plot_dataset:
    input:
        clips=paths.clips(RESULTS, "{dataset}"),
    output:
        clips=figure(
            paths.dataset_plot(RESULTS, "{dataset}", "clips.png"),
            "clips",
            "1. Clips",
            "{dataset}",
            dataset="{dataset}",
            figure="clips by status and reason",
        ),
        summary=figure(
            paths.dataset_plot(RESULTS, "{dataset}", "clips.html"),
            "clips_summary",
            "1. Clips",
            "{dataset}",
            dataset="{dataset}",
            figure="clips by status and reason (table)",
        ),
        durations=figure(
            paths.dataset_plot(RESULTS, "{dataset}", "durations.png"),
            "durations",
            "1. Clips",
            "{dataset}",
            dataset="{dataset}",
            figure="clip durations",
        ),
        features=figure(
            paths.dataset_plot(RESULTS, "{dataset}", "features.png"),
            "features",
            "2. Features",
            "{dataset}",
            dataset="{dataset}",
            figure="feature distributions",
        ),
        svg=multiext(
            paths.dataset_plot(RESULTS, "{dataset}", ""),
            "clips.svg",
            "durations.svg",
            "features.svg",
        ),
    log:
        paths.log(RESULTS, "plots", "{dataset}"),
    benchmark:
        paths.benchmark(RESULTS, "plots", "{dataset}")
    conda:
        "../envs/kebr.yaml"
    resources:
        mem_mb=mem_mb(config, "plot_dataset"),
        runtime=runtime(config, "plot_dataset"),
    params:
        out_dir=subpath(output.clips, parent=True),
    shell:
        'python -m kebr plots dataset --config "$KEBR_CONFIG" --dataset {wildcards.dataset:q}'
        " --clips {input.clips:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule plot_pretrain:
    input:
        paths.pretrain_final(RESULTS, "{dataset}", "{pvariant}"),
    output:
        png=figure(
            paths.pretrain_plot(RESULTS, "{dataset}", "{pvariant}", "png"),
            "training",
            "3. Training",
            "pretraining",
            run="{dataset} / {pvariant}",
        ),
        svg=paths.pretrain_plot(RESULTS, "{dataset}", "{pvariant}", "svg"),
    log:
        paths.log(RESULTS, "plots", "pretrain", "{dataset}", "{pvariant}"),
    benchmark:
        paths.benchmark(RESULTS, "plots", "pretrain", "{dataset}", "{pvariant}")
    conda:
        "../envs/kebr.yaml"
    resources:
        mem_mb=mem_mb(config, "plot_pretrain"),
        runtime=runtime(config, "plot_pretrain"),
    params:
        run=subpath(input[0], parent=True),
        prefix=subpath(output.png, strip_suffix=".png"),
        title=lambda wc: f"pretraining on {wc.dataset}, recipe {wc.pvariant}",
    shell:
        "python -m kebr plots training {params.run:q} --title {params.title:q} --out {params.prefix:q} > {log:q} 2>&1"


rule plot_finetune:
    input:
        finetune_seed_metrics,
    output:
        png=figure(
            paths.finetune_plot(
                RESULTS, "{dataset}", "{pretrained}", "{variant}", "png"
            ),
            "training",
            "3. Training",
            "fine-tuning",
            run="{dataset} / {pretrained} / {variant}",
        ),
        svg=paths.finetune_plot(
            RESULTS, "{dataset}", "{pretrained}", "{variant}", "svg"
        ),
    log:
        paths.log(
            RESULTS, "plots", "finetune", "{dataset}", "{pretrained}", "{variant}"
        ),
    benchmark:
        paths.benchmark(
            RESULTS, "plots", "finetune", "{dataset}", "{pretrained}", "{variant}"
        )
    conda:
        "../envs/kebr.yaml"
    resources:
        mem_mb=mem_mb(config, "plot_finetune"),
        runtime=runtime(config, "plot_finetune"),
    params:
        runs=lambda wc, input: [subpath(f, parent=True) for f in input],
        prefix=subpath(output.png, strip_suffix=".png"),
        title=lambda wc, input: (
            f"fine-tuning on {wc.dataset} from {wc.pretrained}, variant {wc.variant}: {len(input)} seeds"
        ),
    shell:
        "python -m kebr plots training {params.runs:q} --title {params.title:q} --out {params.prefix:q} > {log:q} 2>&1"


rule plot_table:
    input:
        md=paths.table(RESULTS, "{table}", "md"),
        csv=paths.table(RESULTS, "{table}", "csv"),
    output:
        png=figure(
            paths.table_plot(RESULTS, "{table}", "png"),
            "table",
            "4. Tables",
            "{table}",
            table="{table}",
            shows="figure",
        ),
        html=figure(
            paths.table_plot(RESULTS, "{table}", "html"),
            "table_html",
            "4. Tables",
            "{table}",
            table="{table}",
            shows="table",
        ),
        svg=paths.table_plot(RESULTS, "{table}", "svg"),
    log:
        paths.log(RESULTS, "plots", "tables", "{table}"),
    benchmark:
        paths.benchmark(RESULTS, "plots", "tables", "{table}")
    conda:
        "../envs/kebr.yaml"
    resources:
        mem_mb=mem_mb(config, "plot_table"),
        runtime=runtime(config, "plot_table"),
    params:
        tables=subpath(input.md, parent=True),
        prefix=subpath(output.png, strip_suffix=".png"),
    shell:
        'python -m kebr plots table {wildcards.table:q} --config "$KEBR_CONFIG" --tables {params.tables:q}'
        " --out {params.prefix:q} > {log:q} 2>&1"


rule plot_config:
    output:
        figure(paths.config_page(RESULTS), "config", "5. Configuration", "config"),
    log:
        paths.log(RESULTS, "plots", "config"),
    benchmark:
        paths.benchmark(RESULTS, "plots", "config")
    conda:
        "../envs/kebr.yaml"
    resources:
        mem_mb=mem_mb(config, "plot_config"),
        runtime=runtime(config, "plot_config"),
    params:
        fingerprint=fingerprint(config),  # the page shows the whole config: any edit redraws it
    shell:
        'python -m kebr plots config --config "$KEBR_CONFIG" --out {output:q} > {log:q} 2>&1'
