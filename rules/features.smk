# Raw clips -> per-shard ASR, audio and visual features -> HDF5 shards + clips.tsv (issue: shards).
# Each rule's `fingerprint` param hashes the config keys its stage reads, so an edit reruns exactly
# the stages that read the edited key and what depends on them. The per-stage outputs are kept (not
# temp): a rerun of one stage (and assemble) must not drag the other stages back.


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
        mem_mb=mem_mb(config, "demo_corpus"),
        runtime=runtime(config, "demo_corpus"),
    shell:
        "python -m kebr demo-corpus demo_data > {log:q} 2>&1"


checkpoint plan:
    input:
        plan_inputs,
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
        mem_mb=mem_mb(config, "plan", per_input_mb=PICKLE_MB_PER_MB),
        runtime=runtime(config, "plan"),
    params:
        fingerprint=stage_params("plan"),
    shell:
        'python -m kebr plan --config "$KEBR_CONFIG" --dataset {wildcards.dataset:q} --out {output:q} > {log:q} 2>&1'


rule asr:
    input:
        plan=f"{RESULTS}/{{dataset}}/plan/{{shard}}.tsv",
    output:
        f"{RESULTS}/{{dataset}}/asr/{{shard}}.h5",
    log:
        f"{RESULTS}/logs/{{dataset}}/asr/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/asr/{{shard}}.tsv"
    wildcard_constraints:
        dataset=one_of(EXTRACTED),
    conda:
        "../envs/kebr.yaml"
    # One CTranslate2 thread (Snakemake sets OMP_NUM_THREADS from it; kebr.asr.default_cpu_threads):
    # on CPU, jobs in parallel use cores better than threads in a job, and a 2-thread job on 2 cores
    # kept the audio and visual jobs waiting (bench/asr.py --end-to-end). Decoding runs in its own thread.
    threads: 1
    resources:
        mem_mb=mem_mb(config, "asr"),
        runtime=runtime(config, "asr"),
        gpu=gpus(config, "asr", workflow),
        asr_gpu_slots=asr_gpu_slots(config),
    params:
        fingerprint=stage_params("asr"),
    shell:
        'python -m kebr asr --config "$KEBR_CONFIG" --dataset {wildcards.dataset:q} --plan {input.plan:q}'
        " --out {output:q} > {log:q} 2>&1"


rule audio_features:
    input:
        plan=f"{RESULTS}/{{dataset}}/plan/{{shard}}.tsv",
    output:
        f"{RESULTS}/{{dataset}}/audio/{{shard}}.h5",
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
        mem_mb=mem_mb(config, "audio_features"),
        runtime=runtime(config, "audio_features"),
    params:
        fingerprint=stage_params("audio"),
    shell:
        'python -m kebr audio --config "$KEBR_CONFIG" --dataset {wildcards.dataset:q} --plan {input.plan:q}'
        " --out {output:q} > {log:q} 2>&1"


rule visual_features:
    input:
        plan=f"{RESULTS}/{{dataset}}/plan/{{shard}}.tsv",
    output:
        f"{RESULTS}/{{dataset}}/visual/{{shard}}.h5",
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
        mem_mb=mem_mb(config, "visual_features"),
        runtime=runtime(config, "visual_features"),
    params:
        fingerprint=stage_params("visual"),
    shell:
        'python -m kebr visual --config "$KEBR_CONFIG" --dataset {wildcards.dataset:q} --plan {input.plan:q}'
        " --out {output:q} > {log:q} 2>&1"


rule mmsa_import:
    input:
        plan=f"{RESULTS}/{{dataset}}/plan/{{shard}}.tsv",
        arrays=f"{RESULTS}/{{dataset}}/plan/{{shard}}.mmsa.h5",
    output:
        asr=f"{RESULTS}/{{dataset}}/asr/{{shard}}.h5",
        audio=f"{RESULTS}/{{dataset}}/audio/{{shard}}.h5",
        visual=f"{RESULTS}/{{dataset}}/visual/{{shard}}.h5",
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
        mem_mb=mem_mb(config, "mmsa_import"),
        runtime=runtime(config, "mmsa_import"),
    params:
        fingerprint=stage_params("mmsa_import"),
    shell:
        "python -m kebr mmsa-import --plan {input.plan:q} --arrays {input.arrays:q}"
        " --asr {output.asr:q} --audio {output.audio:q} --visual {output.visual:q} > {log:q} 2>&1"


rule assemble_shard:
    input:
        plan=f"{RESULTS}/{{dataset}}/plan/{{shard}}.tsv",
        asr=f"{RESULTS}/{{dataset}}/asr/{{shard}}.h5",
        audio=f"{RESULTS}/{{dataset}}/audio/{{shard}}.h5",
        visual=f"{RESULTS}/{{dataset}}/visual/{{shard}}.h5",
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
        mem_mb=mem_mb(config, "assemble_shard"),
        runtime=runtime(config, "assemble_shard"),
    params:
        fingerprint=stage_params("assemble"),
    shell:
        'python -m kebr assemble --config "$KEBR_CONFIG" --dataset {wildcards.dataset:q} --plan {input.plan:q}'
        " --asr {input.asr:q} --audio {input.audio:q} --visual {input.visual:q}"
        " --out {output.shard:q} --status {output.status:q} > {log:q} 2>&1"


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
        clips=f"{RESULTS}/{{dataset}}/clips.tsv",
        summary=f"{RESULTS}/{{dataset}}/clips_summary.tsv",
    log:
        f"{RESULTS}/logs/{{dataset}}/clips_report.log",
    benchmark:
        f"{RESULTS}/benchmarks/{{dataset}}/clips_report.tsv"
    conda:
        "../envs/kebr.yaml"
    resources:
        mem_mb=mem_mb(config, "clips_report"),
        runtime=runtime(config, "clips_report"),
    params:
        status_dir=f"{RESULTS}/{{dataset}}/status",
    shell:
        "python -m kebr report --plan-dir {input.plan:q} --status-dir {params.status_dir:q} --dataset {wildcards.dataset:q}"
        " --out {output.clips:q} --summary {output.summary:q} > {log:q} 2>&1"


for _dataset in DATASETS:

    rule:
        name:
            f"features_{_dataset}"
        input:
            f"{RESULTS}/{_dataset}/clips.tsv",
        localrule: True
