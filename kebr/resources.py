"""What each Snakemake job asks a scheduler for: runtime, memory, threads and GPUs from the config's
``resources:`` section, and the chain of jobs a long pretraining run is cut into.

The rules call these as ``resources: runtime=runtime(config, "asr")``; each returns a function of
(wildcards, attempt) that Snakemake evaluates per job, so a retry asks for more (attempt x the
configured value) and a dataset's own ``resources:`` overrides the global values for its jobs.
No job asks for more than ``resources.max_runtime`` minutes (a cluster's time limit): pretraining
that needs longer runs as a chain (``pretrain_chain``), each job training its share of the epochs
and the next resuming from the last saved epoch (kebr/train/loop.py ``fit``), so every job fits.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

from kebr import paths
from kebr.variants import recipe

# Rules whose device setting can ask for a GPU, and the config section holding it.
GPU_STAGES = {"asr": "asr", "pretrain": "pretrain", "finetune": "finetune"}
# A profile value still at its placeholder: "<...>" (profiles/slurm/config.yaml).
PLACEHOLDER = re.compile(r"^['\"]?<.*>['\"]?$")


def _setting(config: dict[str, Any], key: str, rule: str, dataset: str | None) -> int:
    own = config["datasets"].get(dataset, {}).get("resources", {}).get(key, {}) if dataset else {}
    return int(own.get(rule, config["resources"][key][rule]))


def runtime(config: dict[str, Any], rule: str, parts: int = 1) -> Callable[..., int]:
    """Minutes for a job of ``rule``: the configured runtime (split over ``parts`` chained jobs)
    times the attempt, never above ``resources.max_runtime``."""
    cap = config["resources"]["max_runtime"]

    def minutes(wildcards: Any, attempt: int) -> int:
        base = math.ceil(_setting(config, "runtime", rule, wildcards.get("dataset")) / parts)
        return min(base * attempt, cap)

    return minutes


def threads(config: dict[str, Any], rule: str) -> Callable[..., int]:
    """CPU threads for a training job of ``rule``: ``resources.threads``, or its dataset's own."""

    def count(wildcards: Any) -> int:
        return _setting(config, "threads", rule, wildcards.get("dataset"))

    return count


def pretrain_runtime(config: dict[str, Any]) -> Callable[..., int]:
    """Minutes for one job of a pretraining chain: the run's runtime over its number of jobs."""
    cap = config["resources"]["max_runtime"]

    def minutes(wildcards: Any, attempt: int) -> int:
        total = _setting(config, "runtime", "pretrain", wildcards.dataset)
        jobs = len(pretrain_chain(config, wildcards.dataset, wildcards.pvariant))
        return min(math.ceil(total / jobs) * attempt, cap)

    return minutes


# An mmsa_pickle plan holds its whole unpickled file: about 1.2x its size (bench/mmsa.py).
PICKLE_MB_PER_MB = 1.2


def configured_mem_mb(config: dict[str, Any], rule: str, dataset: str | None, input_mb: float = 0.0,
                      per_input_mb: float = 0.0, attempt: int = 1) -> int:
    """Memory in MB for a job of ``rule`` on ``dataset``: the configured value, plus ``per_input_mb``
    per MB of input, times the attempt. The job's own process reads it too (kebr/worker.py: what its
    supervised worker may use)."""
    return (_setting(config, "mem_mb", rule, dataset) + round(per_input_mb * input_mb)) * attempt


def mem_mb(config: dict[str, Any], rule: str, per_input_mb: float = 0.0) -> Callable[..., int]:
    """``configured_mem_mb`` for Snakemake: a function of each job's wildcards, attempt and (with
    ``per_input_mb``) input size."""

    def megabytes(wildcards: Any, attempt: int) -> int:
        return configured_mem_mb(config, rule, wildcards.get("dataset"), attempt=attempt)

    def with_input(wildcards: Any, input: Any, attempt: int) -> int:
        return configured_mem_mb(config, rule, wildcards.get("dataset"), input.size_mb, per_input_mb, attempt)

    # Snakemake evaluates a function that takes `input` only once the input exists.
    return with_input if per_input_mb else megabytes


def device(config: dict[str, Any], stage: str, dataset: str | None) -> str:
    """The device setting of a stage (asr, pretrain, finetune) for jobs on ``dataset``."""
    own = config["datasets"].get(dataset, {}).get(stage, {}) if dataset and stage != "asr" else {}
    return own.get("device", config[GPU_STAGES[stage]]["device"])


def gpus(config: dict[str, Any], stage: str, workflow: Any = None) -> Callable[..., int]:
    """1 when the stage's device is ``cuda``, else 0. ``auto`` asks for no GPU: a scheduler hands
    out GPUs only on request, so a job that must have one says ``cuda`` (docs/scale.md "Scale and clusters").

    ASR jobs share GPUs through ``asr_gpu_slots`` instead when the run declares that resource and
    runs its jobs itself (``--resources asr_gpu_slots=N``, as profiles/local does): they then ask
    for no whole GPU, so N of them run on the node's GPU at once. Jobs a cluster runs (SLURM) are
    allocations of their own and keep asking for a GPU each (``asr_gpu_slots`` caps how many)."""

    def count(wildcards: Any) -> int:
        on_gpu = device(config, stage, wildcards.get("dataset")) == "cuda"
        return int(on_gpu and not (stage == "asr" and shares_gpu(workflow)))

    return count


ASR_GPU_SLOTS = "asr_gpu_slots"


def shares_gpu(workflow: Any) -> bool:
    """Whether ASR jobs share a GPU through slots: the run declares ``asr_gpu_slots`` and runs its
    jobs on this machine (not through a cluster executor)."""
    return workflow is not None and ASR_GPU_SLOTS in workflow.global_resources and workflow.local_exec


def asr_gpu_slots(config: dict[str, Any]) -> Callable[..., int]:
    """The GPU slots an ASR job takes: 1 when ``asr.device`` is ``cuda``, else 0. One ASR job (one
    process: decode thread, 2 CPU threads, ``asr.batch_size`` windows per encoder pass) leaves a big
    GPU mostly idle, so several share it (bench/asr.py --device cuda measures clips/s per slot count)."""

    def count(wildcards: Any) -> int:
        return int(device(config, "asr", wildcards.get("dataset")) == "cuda")

    return count


def pretrain_chain(config: dict[str, Any], dataset: str, variant: str) -> list[int]:
    """The epoch each job of a pretraining run stops after, in order; the last is the run's
    final epoch. One job unless the run's runtime exceeds ``resources.max_runtime``."""
    epochs = recipe(config, variant, dataset)["pretrain"]["epochs"]
    total = _setting(config, "runtime", "pretrain", dataset)
    jobs = min(epochs, math.ceil(total / config["resources"]["max_runtime"]))
    return sorted({math.ceil(k * epochs / jobs) for k in range(1, jobs + 1)})


def previous_pretrain_part(config: dict[str, Any], dataset: str, variant: str, epoch: int | None) -> list[str]:
    """The marker file of the job before this one in a pretraining chain (none for the first);
    ``epoch`` None is the chain's last job, the one writing final.json."""
    stops = pretrain_chain(config, dataset, variant)
    index = len(stops) - 1 if epoch is None else stops[:-1].index(epoch)
    if index == 0:
        return []
    return [paths.pretrain_part(config["results"], dataset, variant, stops[index - 1])]


def placeholders(values: dict[str, Any]) -> list[str]:
    """Names of the values still at a ``<...>`` placeholder (profiles/slurm/config.yaml)."""
    return sorted(name for name, value in values.items() if isinstance(value, str) and PLACEHOLDER.match(value))


def _raw(values: Any) -> dict[str, Any]:
    """A Snakemake resource mapping (name -> Resource, or plain values) as name -> given value."""
    values = getattr(values, "parsed", values) or {}  # Snakemake 8's DefaultResources
    return {name: getattr(value, "raw", value) for name, value in values.items()}


def check_profile(workflow: Any) -> None:
    """Stop before any job when a profile's partition or account is still its placeholder."""
    settings = workflow.resource_settings
    found = [f"default-resources: {name}" for name in placeholders(_raw(settings.default_resources))]
    for rule, values in (settings.overwrite_resources or {}).items():
        found += [f"set-resources: {rule}: {name}" for name in placeholders(_raw(values))]
    if found:
        raise ValueError("the profile still has placeholders; set them to your cluster's values "
                         "(`sinfo -s` lists partitions, `sacctmgr show assoc user=$USER` accounts):\n  "
                         + "\n  ".join(found))
