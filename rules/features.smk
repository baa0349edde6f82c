# Raw clips -> per-shard ASR, audio and visual features -> HDF5 shards + clips.tsv (issue: shards).


rule demo_corpus:
    output:
        "demo_data/README.txt",
    log:
        f"{RESULTS}/logs/demo_corpus.log",
    benchmark:
        f"{RESULTS}/benchmarks/demo_corpus.tsv"
    conda:
        "../envs/kebr.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "python -m kebr demo-corpus demo_data > {log} 2>&1"


checkpoint plan:
    input:
        demo_inputs,
        mmsa_pickle_input,
    output:
        directory(f"{RESULTS}/{{dataset}}/plan"),
    log:
        f"{RESULTS}/logs/{{dataset}}/plan.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/plan.tsv"
    conda:
        "../envs/kebr.yaml"
    resources:
        mem_mb=plan_mem_mb,
        runtime=60,
    params:
        config=CONFIG,
    shell:
        "python -m kebr plan --config {params.config} --dataset {wildcards.dataset} --out {output} > {log} 2>&1"


rule asr:
    input:
        plan=f"{RESULTS}/{{dataset}}/plan/{{shard}}.tsv",
    output:
        temp(f"{RESULTS}/{{dataset}}/asr/{{shard}}.jsonl"),
    log:
        f"{RESULTS}/logs/{{dataset}}/asr/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/asr/{{shard}}.tsv"
    wildcard_constraints:
        dataset=one_of(EXTRACTED),
    conda:
        "../envs/kebr.yaml"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=240,
        gpu=1 if config["asr"]["device"] == "cuda" else 0,
    params:
        config=CONFIG,
    shell:
        "python -m kebr asr --config {params.config} --plan {input.plan} --out {output} > {log} 2>&1"


rule audio_features:
    input:
        plan=f"{RESULTS}/{{dataset}}/plan/{{shard}}.tsv",
    output:
        temp(f"{RESULTS}/{{dataset}}/audio/{{shard}}.jsonl"),
    log:
        f"{RESULTS}/logs/{{dataset}}/audio/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/audio/{{shard}}.tsv"
    wildcard_constraints:
        dataset=one_of(EXTRACTED),
    conda:
        "../envs/kebr.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=240,
    params:
        config=CONFIG,
    shell:
        "python -m kebr audio --config {params.config} --plan {input.plan} --out {output} > {log} 2>&1"


rule visual_features:
    input:
        plan=f"{RESULTS}/{{dataset}}/plan/{{shard}}.tsv",
    output:
        temp(f"{RESULTS}/{{dataset}}/visual/{{shard}}.jsonl"),
    log:
        f"{RESULTS}/logs/{{dataset}}/visual/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/visual/{{shard}}.tsv"
    wildcard_constraints:
        dataset=one_of(EXTRACTED),
    conda:
        "../envs/kebr.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=480,
    params:
        config=CONFIG,
    shell:
        "python -m kebr visual --config {params.config} --plan {input.plan} --out {output} > {log} 2>&1"


rule mmsa_import:
    input:
        plan=f"{RESULTS}/{{dataset}}/plan/{{shard}}.tsv",
        arrays=f"{RESULTS}/{{dataset}}/plan/{{shard}}.mmsa.h5",
    output:
        asr=temp(f"{RESULTS}/{{dataset}}/asr/{{shard}}.jsonl"),
        audio=temp(f"{RESULTS}/{{dataset}}/audio/{{shard}}.jsonl"),
        visual=temp(f"{RESULTS}/{{dataset}}/visual/{{shard}}.jsonl"),
    log:
        f"{RESULTS}/logs/{{dataset}}/mmsa_import/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/mmsa_import/{{shard}}.tsv"
    wildcard_constraints:
        dataset=one_of(PICKLED),
    conda:
        "../envs/kebr.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "python -m kebr mmsa-import --plan {input.plan} --arrays {input.arrays}"
        " --asr {output.asr} --audio {output.audio} --visual {output.visual} > {log} 2>&1"


rule assemble_shard:
    input:
        plan=f"{RESULTS}/{{dataset}}/plan/{{shard}}.tsv",
        asr=f"{RESULTS}/{{dataset}}/asr/{{shard}}.jsonl",
        audio=f"{RESULTS}/{{dataset}}/audio/{{shard}}.jsonl",
        visual=f"{RESULTS}/{{dataset}}/visual/{{shard}}.jsonl",
    output:
        shard=f"{RESULTS}/{{dataset}}/shards/{{shard}}.h5",
        status=f"{RESULTS}/{{dataset}}/status/{{shard}}.tsv",
    log:
        f"{RESULTS}/logs/{{dataset}}/assemble/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/assemble/{{shard}}.tsv"
    conda:
        "../envs/kebr.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        config=CONFIG,
    shell:
        "python -m kebr assemble --config {params.config} --dataset {wildcards.dataset} --plan {input.plan}"
        " --asr {input.asr} --audio {input.audio} --visual {input.visual}"
        " --out {output.shard} --status {output.status} > {log} 2>&1"


rule clips_report:
    input:
        plan=f"{RESULTS}/{{dataset}}/plan",
        status=lambda wc: expand(
            f"{RESULTS}/{wc.dataset}/status/{{shard}}.tsv", shard=shards_of(wc.dataset)
        ),
        shards=lambda wc: expand(
            f"{RESULTS}/{wc.dataset}/shards/{{shard}}.h5", shard=shards_of(wc.dataset)
        ),
    output:
        f"{RESULTS}/{{dataset}}/clips.tsv",
    log:
        f"{RESULTS}/logs/{{dataset}}/clips_report.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/clips_report.tsv"
    conda:
        "../envs/kebr.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        status_dir=f"{RESULTS}/{{dataset}}/status",
    shell:
        "python -m kebr report --plan-dir {input.plan} --status-dir {params.status_dir} --out {output} > {log} 2>&1"


for _dataset in DATASETS:

    rule:
        name:
            f"features_{_dataset}"
        input:
            f"{RESULTS}/{_dataset}/clips.tsv",
        localrule: True
