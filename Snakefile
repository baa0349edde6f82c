# kebr: raw talking-head videos -> HDF5 feature shards -> KEBR pretraining and fine-tuning -> tables.
# Wiring only: every rule runs one `kebr` CLI command; the logic lives in the kebr package.


from snakemake.utils import min_version, validate

min_version("8.0")


configfile: "config.yaml"


validate(config, "kebr/schemas/config.schema.yaml")


include: "rules/common.smk"
include: "rules/features.smk"
include: "rules/training.smk"
