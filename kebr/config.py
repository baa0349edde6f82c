"""Load config.yaml, validate it against the JSON schema and fill in every default.

The same schema file is used by the Snakefile (``snakemake.utils.validate``) and by the CLI, so a
key means the same thing on both paths.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import hashlib
import json

import jsonschema
import yaml

SCHEMA_PATH = Path(str(resources.files("kebr") / "schemas" / "config.schema.yaml"))


def _with_defaults(validator_class: type) -> type:
    """A validator that writes each property's schema default into the instance (jsonschema FAQ)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):  # type: ignore[no-untyped-def]
        for name, sub in properties.items():
            if isinstance(instance, dict) and "default" in sub:
                instance.setdefault(name, sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate in place, fill defaults, and return the config; raises ``ValueError`` with the path."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.path))
    if errors:
        lines = [f"  {'/'.join(map(str, e.path)) or '<top>'}: {e.message}" for e in errors]
        raise ValueError("invalid config:\n" + "\n".join(lines))
    for name, dataset in config["datasets"].items():
        key = {"manifest": "manifest", "mmsa_pickle": "pickle"}.get(dataset["layout"], "root")
        if key not in dataset:
            raise ValueError(f"invalid config:\n  datasets/{name}: layout {dataset['layout']} needs `{key}`")
        if dataset["layout"] == "mmsa_pickle" and not dataset["trust_pickle"]:
            from kebr.mmsa import untrusted_pickle_message

            raise ValueError(f"invalid config:\n  datasets/{name}: {untrusted_pickle_message(dataset['pickle'])}")
    return config


def load_config(path: str | Path) -> dict[str, Any]:
    config = yaml.safe_load(Path(path).read_text()) or {}
    return validate_config(config)


def dataset_dir(config: dict[str, Any], dataset: str) -> Path:
    """Where every output of one dataset lives."""
    if dataset not in config["datasets"]:
        raise KeyError(f"dataset {dataset!r} is not in config datasets: {sorted(config['datasets'])}")
    return Path(config["results"]) / dataset


def write_resolved_config(config: dict[str, Any], path: str | Path) -> Path:
    """Write the validated config (with Snakemake's --config overrides) for the CLI jobs to read.

    Rewritten only when it changed, so an unchanged config never looks new.
    """
    path = Path(path)
    text = yaml.safe_dump(config, sort_keys=True)
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


# The config keys each per-shard stage's output depends on, as dotted paths; "dataset.<key>" is a
# key of the dataset's own entry under `datasets:`. A stage's fingerprint hashes exactly these values,
# so editing any other key (training settings, other datasets, `results`) leaves its outputs valid,
# and editing one of these reruns the stage and everything downstream of it. A stage that starts to
# read another key must list it here, or edits of that key will go unnoticed.
STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "plan": ("seed", "shard_size", "split", "dataset.layout", "dataset.root", "dataset.manifest",
             "dataset.subsets", "dataset.meta", "dataset.pickle"),
    "asr": ("asr",),
    "audio": ("audio",),
    "visual": ("visual",),
    # An mmsa_pickle dataset's features come from its plan (the pickle's arrays), no config key.
    "mmsa_import": (),
    "assemble": ("seed", "language", "text", "audio.max_frames", "visual.max_frames"),
}
# The stages whose outputs make up a shard, in DAG order; an mmsa_pickle dataset imports its
# transcripts and features (kebr/mmsa.py) instead of extracting them.
FEATURE_STAGES = ("plan", "asr", "audio", "visual", "assemble")
IMPORT_STAGES = ("plan", "mmsa_import", "assemble")


def feature_stages(config: dict[str, Any], dataset: str) -> tuple[str, ...]:
    """The stages that make one dataset's shards."""
    return IMPORT_STAGES if config["datasets"][dataset]["layout"] == "mmsa_pickle" else FEATURE_STAGES


def _lookup(config: dict[str, Any], dotted: str, dataset: str | None) -> Any:
    if dotted.startswith("dataset."):
        if dataset is None:
            raise ValueError(f"config key {dotted!r} needs a dataset")
        node: Any = config["datasets"][dataset]
        dotted = dotted[len("dataset."):]
    else:
        node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def fingerprint(values: Any) -> str:
    """A short stable hash of JSON-able ``values`` (key order does not matter)."""
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stage_fingerprint(config: dict[str, Any], stage: str, dataset: str | None = None) -> str:
    """The fingerprint of the config keys ``stage`` reads (STAGE_KEYS), for one dataset."""
    if stage not in STAGE_KEYS:
        raise ValueError(f"unknown stage {stage!r}: one of {sorted(STAGE_KEYS)}")
    return fingerprint({key: _lookup(config, key, dataset) for key in STAGE_KEYS[stage]})


def features_fingerprint(config: dict[str, Any], dataset: str) -> str:
    """The fingerprint a dataset's shards carry: every feature stage's keys, combined."""
    return fingerprint([stage_fingerprint(config, stage, dataset) for stage in feature_stages(config, dataset)])
