# The model cache (kebr/models.py): `snakemake models` on a machine with network (a cluster's login
# node) fetches every model the config names once; every job then loads from it offline.


rule models:
    output:
        f"{config['models']['dir']}/kebr-models.json",
    log:
        f"{RESULTS}/logs/models.log",
    benchmark:
        f"{RESULTS}/benchmarks/models.tsv"
    localrule: True
    conda:
        "../envs/kebr.yaml"
    resources:
        mem_mb=mem_mb(config, "models"),
        runtime=runtime(config, "models"),
    params:
        config=CONFIG,
    shell:
        "python -m kebr fetch-models --config {params.config} --out {output} > {log} 2>&1"
