# The model cache (kebr/model_cache.py): `snakemake models` on a machine with network (a cluster's login
# node) fetches every model the config names once; every job then loads from it offline.


rule models:
    output:
        str(lock_path(config)),
    log:
        paths.log(RESULTS, "models"),
    benchmark:
        paths.benchmark(RESULTS, "models")
    localrule: True
    conda:
        "../envs/kebr.yaml"
    resources:
        mem_mb=mem_mb(config, "models"),
        runtime=runtime(config, "models"),
    params:
        # The models named and their pinned revisions: a change fetches again.
        fingerprint=models_fingerprint(config),
    shell:
        'python -m kebr fetch-models --config "$KEBR_CONFIG" --out {output:q} > {log:q} 2>&1'
