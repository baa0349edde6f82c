"""The clip record every stage passes around, and the error that turns a clip into a skip."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


class ClipError(Exception):
    """A clip that cannot be processed; ``str(exc)`` is the skip reason written to clips.tsv."""


@dataclass(frozen=True)
class Clip:
    clip_id: str
    video: str | None = None
    audio: str | None = None
    text: str | None = None
    label: float | None = None
    split: str = "train"
    speaker: str = ""
    shard: str = ""

    @property
    def media(self) -> str:
        """The file the audio comes from: the audio file if given, else the video."""
        path = self.audio or self.video
        if path is None:
            raise ClipError("no media: neither audio nor video given")
        return path

    def to_row(self) -> dict[str, str]:
        row = asdict(self)
        return {k: "" if v is None else str(v) for k, v in row.items()}

    @classmethod
    def from_row(cls, row: dict[str, str]) -> "Clip":
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = row.get(f.name, "")
            if f.name == "label":
                values[f.name] = float(raw) if raw not in ("", None) else None
            elif f.name in ("video", "audio", "text"):
                values[f.name] = raw if raw not in ("", None) else None
            else:
                values[f.name] = raw or ""
        return cls(**values)  # type: ignore[arg-type]


def describe_error(exc: BaseException) -> str:
    """The skip reason for an exception raised while processing one clip."""
    if isinstance(exc, ClipError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
