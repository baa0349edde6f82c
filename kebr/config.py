"""Load config.yaml, validate it against the JSON schema and fill in every default.

The same schema file is used by the Snakefile and by the CLI, through ``validate_config``, so a key
means the same thing on both paths. This module also names what each stage's outputs depend on
(``STAGE_KEYS``, ``fingerprint``; a stage's own fingerprint, with the models it loads, is
kebr/fingerprints.py's) and writes the resolved config the workflow's jobs read
(``write_resolved_config``).

Why not ``snakemake.utils.validate(config, schema, set_default=True)``: it runs the same jsonschema
recipe, but fills defaults into every object, a dataset's ``pretrain:``/``finetune:`` overrides
included, where a filled-in default would override the top-level value; it stops at the first error;
and it would import Snakemake into every CLI job. tests/test_repository.py shows the difference.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from kebr import paths
from kebr.recipe_files import check_overrides

SCHEMA_PATH = Path(str(resources.files("kebr") / "schemas" / "config.schema.yaml"))
# Per-dataset sections that override a top-level section for runs on that dataset.
OVERRIDE_SECTIONS = ("pretrain", "finetune")


def _with_defaults(validator_class: type, skip: set[int]) -> type:
    """A validator that writes each property's schema default into the instance (jsonschema FAQ).

    Objects whose ``id`` is in ``skip`` (a dataset's overrides) get no defaults: they hold only the
    keys that differ, and a filled-in default would override the top-level value.
    """
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):  # type: ignore[no-untyped-def]
        if isinstance(instance, dict) and id(instance) not in skip:
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])  # never share the schema's objects
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


@functools.cache
def _schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _dicts_within(value: Any) -> list[int]:
    if not isinstance(value, dict):
        return []
    return [id(value)] + [i for v in value.values() for i in _dicts_within(v)]


def untrusted_pickle_message(path: str | Path) -> str:
    """Why an ``mmsa_pickle`` dataset needs ``trust_pickle: true``: said by the config's validation and
    by kebr/mmsa.py before it unpickles (here so that config imports nothing from kebr.mmsa)."""
    return (f"layout mmsa_pickle reads {path}, a Python pickle, and unpickling a file can run any code "
            "it contains: set `trust_pickle: true` on this dataset only if you trust where the file came "
            "from (MMSA's releases can be checked against the SHA-256 sums in MMSA's README)")


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate in place, fill defaults, and return the config; raises ``ValueError`` with the path."""
    if not isinstance(config, dict):
        raise ValueError(f"invalid config: expected a mapping of keys, got {type(config).__name__}")
    schema = _schema()
    datasets = config.get("datasets")
    overrides = {i for d in (datasets.values() if isinstance(datasets, dict) else ()) if isinstance(d, dict)
                 for section in OVERRIDE_SECTIONS for i in _dicts_within(d.get(section))}
    validator = _with_defaults(jsonschema.Draft202012Validator, overrides)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.path))
    if errors:
        lines = [f"  {'/'.join(map(str, e.path)) or '<top>'}: {e.message}" for e in errors]
        raise ValueError("invalid config:\n" + "\n".join(lines))
    problems = []
    for name, dataset in config["datasets"].items():
        key = {"manifest": "manifest", "mmsa_pickle": "pickle"}.get(dataset["layout"], "root")
        if key not in dataset:
            problems.append(f"datasets/{name}: layout {dataset['layout']} needs `{key}`")
        elif dataset["layout"] == "mmsa_pickle" and not dataset["trust_pickle"]:
            problems.append(f"datasets/{name}: {untrusted_pickle_message(dataset['pickle'])}")
        source = dataset.get("pretrained_on")
        if source is not None and source not in config["datasets"]:
            problems.append(f"datasets/{name}/pretrained_on: {source!r} is not one of the datasets "
                            f"{sorted(config['datasets'])}")
    problems += check_overrides(config, schema)
    if problems:
        raise ValueError("invalid config:\n" + "\n".join(f"  {p}" for p in problems))
    return config


def default_config() -> dict[str, Any]:
    """The config an empty config.yaml resolves to: every key at its schema default."""
    return validate_config({})


@functools.cache
def _section_validator(name: str) -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(_schema()["$defs"][name])


def check_section(name: str, values: dict[str, Any]) -> None:
    """Raise ``ValueError`` listing every way ``values`` breaks the schema's ``$defs/<name>`` (the
    training sections ``pretrain`` and ``finetune``: kebr/train/settings.py checks its settings so)."""
    errors = sorted(_section_validator(name).iter_errors(values), key=lambda e: list(e.path))
    if errors:
        lines = [f"  {'/'.join(map(str, [name, *e.path]))}: {e.message}" for e in errors]
        raise ValueError(f"invalid {name} settings:\n" + "\n".join(lines))


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a syntax error is one line naming the file, line and column."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        what = ": ".join(str(x) for x in (exc.context, exc.problem) if x)
        raise ValueError(f"{where}: YAML syntax error: {what}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: YAML error: {' '.join(str(exc).split())}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def check_yaml(path: str | Path) -> None:
    """Raise the one-line syntax error of ``read_yaml`` if ``path`` exists and is not valid YAML."""
    if Path(path).is_file():
        read_yaml(path)


def load_config(path: str | Path) -> dict[str, Any]:
    config = read_yaml(path)
    return validate_config({} if config is None else config)


def write_resolved_config(config: dict[str, Any], results: str | Path) -> Path:
    """Write the validated config (with Snakemake's --config overrides) for the workflow's jobs.

    The file is ``<results>/config/<fingerprint>.yaml``: content-addressed, so each distinct config
    has its own file, written once and never changed afterwards (a dry run or a second Snakemake
    with an edited config writes another file and cannot change the one a running job reads). The
    write goes through a uniquely named temporary file and a rename, so concurrent writers are safe.
    """
    plain = json.loads(json.dumps(config))  # e.g. OrderedDicts of a JSON config -> plain dicts
    text = yaml.safe_dump(plain, sort_keys=True)
    path = Path(paths.resolved_config(results, fingerprint(plain)))
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


# The config keys each per-shard stage's output depends on, as dotted paths; "dataset.<key>" is a
# key of the dataset's own entry under `datasets:`. A stage's fingerprint hashes exactly these values,
# so editing any other key (training settings, other datasets, `results`) leaves its outputs valid,
# and editing one of these reruns the stage and everything downstream of it. A stage that starts to
# read another key must list it here, or edits of that key will go unnoticed. Keys that decide only
# HOW a stage runs, not what it outputs, are left out on purpose: stages.transient_retries,
# stages.retry_backoff_s, stages.progress_* and datasets.<name>.max_error_fraction (which fails a
# job, so its output never exists, rather than changing it).
STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "plan": ("seed", "shard_size", "split", "dataset.layout", "dataset.root", "dataset.manifest",
             "dataset.subsets", "dataset.meta", "dataset.pickle"),
    "asr": ("asr", "language.id_model", "stages.max_clip_seconds", "stages.clip_timeout_s"),
    "audio": ("audio", "stages.max_clip_seconds", "stages.clip_timeout_s"),
    "visual": ("visual", "stages.max_clip_seconds", "stages.clip_timeout_s"),
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


def lookup(config: dict[str, Any], dotted: str, dataset: str | None = None) -> Any:
    """The value at a dotted key ("audio.max_frames"), None where absent; "dataset.<key>" reads
    ``dataset``'s own entry."""
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
