# Raw clips -> per-shard ASR, audio and visual features -> HDF5 shards + clips.tsv (issue: shards).
# Each rule's `fingerprint` param hashes the config keys its stage reads, so an edit reruns exactly
# the stages that read the edited key and what depends on them. The per-stage outputs are kept (not
# temp): a rerun of one stage (and assemble) must not drag the other stages back.


rule demo_corpus:
    output:
        "demo_data/README.txt",
    log:
        paths.log(RESULTS, "demo_corpus"),
    benchmark:
        paths.benchmark(RESULTS, "demo_corpus")
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
        directory(paths.plan_dir(RESULTS, "{dataset}")),
    log:
        paths.log(RESULTS, "{dataset}", "plan"),
    benchmark:
        paths.benchmark(RESULTS, "{dataset}", "plan")
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
        plan=paths.plan(RESULTS, "{dataset}", "{shard}"),
    output:
        paths.stage_output(RESULTS, "{dataset}", "asr", "{shard}"),
    log:
        paths.log(RESULTS, "{dataset}", "asr", "{shard}"),
    benchmark:
        paths.benchmark(RESULTS, "{dataset}", "asr", "{shard}")
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
        plan=paths.plan(RESULTS, "{dataset}", "{shard}"),
    output:
        paths.stage_output(RESULTS, "{dataset}", "audio", "{shard}"),
    log:
        paths.log(RESULTS, "{dataset}", "audio", "{shard}"),
    benchmark:
        paths.benchmark(RESULTS, "{dataset}", "audio", "{shard}")
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
        plan=paths.plan(RESULTS, "{dataset}", "{shard}"),
    output:
        paths.stage_output(RESULTS, "{dataset}", "visual", "{shard}"),
    log:
        paths.log(RESULTS, "{dataset}", "visual", "{shard}"),
    benchmark:
        paths.benchmark(RESULTS, "{dataset}", "visual", "{shard}")
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
        plan=paths.plan(RESULTS, "{dataset}", "{shard}"),
        arrays=paths.plan_arrays(RESULTS, "{dataset}", "{shard}"),
    output:
        asr=paths.stage_output(RESULTS, "{dataset}", "asr", "{shard}"),
        audio=paths.stage_output(RESULTS, "{dataset}", "audio", "{shard}"),
        visual=paths.stage_output(RESULTS, "{dataset}", "visual", "{shard}"),
    log:
        paths.log(RESULTS, "{dataset}", "mmsa_import", "{shard}"),
    benchmark:
        paths.benchmark(RESULTS, "{dataset}", "mmsa_import", "{shard}")
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
        plan=paths.plan(RESULTS, "{dataset}", "{shard}"),
        asr=paths.stage_output(RESULTS, "{dataset}", "asr", "{shard}"),
        audio=paths.stage_output(RESULTS, "{dataset}", "audio", "{shard}"),
        visual=paths.stage_output(RESULTS, "{dataset}", "visual", "{shard}"),
    output:
        shard=paths.shard(RESULTS, "{dataset}", "{shard}"),
        status=paths.status(RESULTS, "{dataset}", "{shard}"),
    log:
        paths.log(RESULTS, "{dataset}", "assemble", "{shard}"),
    benchmark:
        paths.benchmark(RESULTS, "{dataset}", "assemble", "{shard}")
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
        plan=paths.plan_dir(RESULTS, "{dataset}"),
        status=lambda wc: expand(
            paths.status(RESULTS, wc.dataset, "{shard}"), shard=shards_of(wc.dataset)
        ),
        shards=lambda wc: expand(
            paths.shard(RESULTS, wc.dataset, "{shard}"), shard=shards_of(wc.dataset)
        ),
    output:
        clips=paths.clips(RESULTS, "{dataset}"),
        summary=paths.clips_summary(RESULTS, "{dataset}"),
    log:
        paths.log(RESULTS, "{dataset}", "clips_report"),
    benchmark:
        paths.benchmark(RESULTS, "{dataset}", "clips_report")
    conda:
        "../envs/kebr.yaml"
    resources:
        mem_mb=mem_mb(config, "clips_report"),
        runtime=runtime(config, "clips_report"),
    params:
        status_dir=paths.status_dir(RESULTS, "{dataset}"),
    shell:
        "python -m kebr report --plan-dir {input.plan:q} --status-dir {params.status_dir:q} --dataset {wildcards.dataset:q}"
        " --out {output.clips:q} --summary {output.summary:q} > {log:q} 2>&1"


for _dataset in DATASETS:

    rule:
        name:
            f"features_{_dataset}"
        input:
            paths.clips(RESULTS, _dataset),
        localrule: True
