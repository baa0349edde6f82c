# kebr: raw talking-head videos -> HDF5 feature shards -> KEBR pretraining and fine-tuning -> tables.
# Wiring only: every rule runs one `kebr` CLI command; the logic lives in the kebr package.


from snakemake.utils import min_version

from kebr.config import validate_config

min_version("8.0")


configfile: "config.yaml"


# JSON schema kebr/schemas/config.schema.yaml: the same validation, defaults and checks as the CLI.
validate_config(config)

# Every rule runs `python -m kebr ...`: this checkout's kebr, in a venv or a --use-conda env alike.
shell.prefix(f"export PYTHONPATH={workflow.basedir}:$PYTHONPATH; ")


include: "rules/common.smk"
include: "rules/features.smk"
include: "rules/training.smk"
