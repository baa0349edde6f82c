# kebr: raw talking-head videos -> HDF5 feature shards -> KEBR pretraining and fine-tuning -> tables.
# Wiring only: every rule runs one `kebr` CLI command; the logic lives in the kebr package.


import shlex
import sys

from snakemake.utils import min_version

from kebr.config import check_yaml, validate_config, write_resolved_config
from kebr.model_cache import lock_path, models_fingerprint
from kebr.resources import (
    PICKLE_MB_PER_MB,
    asr_gpu_slots,
    check_profile,
    gpus,
    mem_mb,
    pretrain_runtime,
    previous_pretrain_part,
    runtime,
    threads,
)

min_version("8.0")

# A bad config is one message, not a traceback (Snakemake's own YAML error names no file or line).
try:
    check_yaml("config.yaml")
except ValueError as error:
    sys.exit(str(error))


configfile: "config.yaml"


# JSON schema kebr/schemas/config.schema.yaml: the same validation, defaults and checks as the CLI.
try:
    validate_config(config)
    # A cluster profile's partition and account must be set before anything is submitted.
    check_profile(workflow)
except ValueError as error:
    sys.exit(str(error))
# The jobs read the validated config (--config overrides included) from a content-addressed file,
# results/config/<fingerprint>.yaml, written once and never changed. Its name changes with every
# edit, so it reaches the jobs through the environment ($KEBR_CONFIG), not through params or the
# shell text: Snakemake reruns a job when those change, and each rule's `fingerprint` param already
# says which config keys its job reads.
CONFIG = write_resolved_config(config, config["results"])

# Every rule runs `python -m kebr ...`: this checkout's kebr, in a venv or a --use-conda env alike.
shell.prefix(
    f'export PYTHONPATH={shlex.quote(workflow.basedir)}:"$PYTHONPATH" KEBR_CONFIG={shlex.quote(str(CONFIG))}; '
)


include: "rules/common.smk"
include: "rules/features.smk"
include: "rules/training.smk"
include: "rules/models.smk"
include: "rules/report_common.smk"
include: "rules/report.smk"


# The default target (`snakemake --cores 2` alone): the demo's table and Fig. 4 with every figure;
# then `snakemake --report report.html` collects them (README command 1). It sits here because
# Snakemake takes `default_target` from the main Snakefile only.
rule demo:
    default_target: True
    input:
        targets_of(*DEMO_TABLES),
    localrule: True
