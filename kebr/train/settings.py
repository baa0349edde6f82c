"""Training settings: the config's ``pretrain:`` and ``finetune:`` sections as frozen dataclasses.

Each key is named once: here as a typed field, with its default and its allowed values in the schema
(kebr/schemas/config.schema.yaml, ``$defs/pretrain`` and ``$defs/finetune``). The defaults are read
from the schema at import, through the config an empty config.yaml resolves to (kebr.config
``default_config``), and a class whose fields and the schema's keys differ fails to import. Every
instance is checked against the schema (``kebr.config.check_section``), so a setting passed by hand
(tests, bench/) is held to the rules the config is.

``from_config`` takes the section as ``kebr.variants.recipe`` resolves it (a dataset's own keys over
the top level); keys it leaves out take the schema default, and an unknown key is an error.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, TypeVar

from kebr.config import check_section, default_config

_DEFAULTS = default_config()
_Settings = TypeVar("_Settings", bound="_Section")


@dataclass(frozen=True)
class MCCSettings:
    """The MCC of one stage (spec 4; the schema's ``mcc:`` of ``pretrain``/``finetune``). No defaults
    of its own: each stage's differ, so they are the stage's ``mcc`` field's."""

    enabled: bool
    variant: str  # paper | reference
    g: float
    weight: float
    scale: float
    text_positions: str  # real | all
    sequence: str  # tcmf | gated
    trains_lm: bool


def _from_schema(section: str) -> Callable[[type], type]:
    """Make ``cls`` a frozen dataclass whose fields are the schema's ``section`` keys, with its defaults."""

    def build(cls: type) -> type:
        defaults = _DEFAULTS[section]
        for what, ours, theirs in ((section, cls.__annotations__, defaults),
                                   (f"{section}.mcc", MCCSettings.__annotations__, defaults["mcc"])):
            if set(ours) != set(theirs):
                raise TypeError(f"{cls.__name__} and the schema's {what} differ: only in the class "
                                f"{sorted(set(ours) - set(theirs))}, only in the schema {sorted(set(theirs) - set(ours))}")
        for name, value in defaults.items():
            setattr(cls, name, MCCSettings(**value) if name == "mcc" else _frozen(value))
        cls.SECTION = section
        return dataclass(frozen=True)(cls)

    return build


def _frozen(value: Any) -> Any:
    """Lists (save_epochs, seeds) as tuples: a frozen dataclass's fields cannot change in place."""
    return tuple(value) if isinstance(value, list) else value


class _Section:
    """What both stages' settings do: build from a config section, check against the schema."""

    SECTION: str

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            object.__setattr__(self, field.name, _frozen(getattr(self, field.name)))
        check_section(self.SECTION, self.as_config())

    def as_config(self) -> dict[str, Any]:
        """The settings as the config writes them (lists, the mcc as a mapping): what the training
        fingerprint and the run record hash (kebr/experiments.py)."""
        return json.loads(json.dumps(asdict(self)))  # type: ignore[call-overload]

    @classmethod
    def from_config(cls: type[_Settings], section: Mapping[str, Any]) -> _Settings:
        """The settings of a resolved config section; keys it leaves out (an ``mcc:`` key too) take the
        schema default; an unknown key raises ``ValueError``."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(section) - set(fields)
        if unknown:
            raise ValueError(f"unknown {cls.SECTION} settings {sorted(unknown)}: expected {sorted(fields)}")
        mcc = section.get("mcc", {})
        unknown = set(mcc) - set(MCCSettings.__annotations__)
        if unknown:
            raise ValueError(f"unknown {cls.SECTION}.mcc settings {sorted(unknown)}: expected "
                             f"{sorted(MCCSettings.__annotations__)}")
        values = {**section, "mcc": dataclasses.replace(fields["mcc"].default, **mcc)}
        return cls(**values)


@_from_schema("pretrain")
class PretrainSettings(_Section):
    """Pretraining (kebr/train/pretrain.py); each key's meaning is in the schema's ``$defs/pretrain``."""

    epochs: int
    batch_size: int  # per process under DDP
    lr: float
    save_epochs: tuple[int, ...]
    checkpoint_minutes: float
    device: str
    num_workers: int
    amp: bool
    compile: bool | str
    freeze_text: bool
    frozen_lm_dropout: bool
    lm_cache: str
    bucket_by_length: bool
    log_every_steps: int
    mcc: MCCSettings

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lm_cache != "none" and (not self.freeze_text or self.frozen_lm_dropout):
            raise ValueError("pretrain.lm_cache needs a fixed LM (pretrain.freeze_text: true and "
                             "pretrain.frozen_lm_dropout: false); set pretrain.lm_cache: none")


@_from_schema("finetune")
class FinetuneSettings(_Section):
    """Fine-tuning (kebr/train/finetune.py); each key's meaning is in the schema's ``$defs/finetune``."""

    epochs: int
    batch_size: int  # per process under DDP
    lr_backbone: float
    lr_head: float
    lr_fusion: float | None
    t_max: int
    checkpoint_minutes: float
    seeds: tuple[int, ...]
    device: str
    num_workers: int
    amp: bool
    eval_amp: bool
    select_by: str
    bucket_by_length: bool
    log_every_steps: int
    mcc: MCCSettings


STAGE_SETTINGS: dict[str, type[PretrainSettings] | type[FinetuneSettings]] = {
    "pretrain": PretrainSettings, "finetune": FinetuneSettings}
