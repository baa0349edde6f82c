"""Named training recipes (kebr/recipes/<name>.yaml): what the paper targets run, and what differs.

Two recipes: ``paper``, the paper as written (every value it states, the released code's where it is
silent), and ``reference``, the released code as it runs (aoqzhu/KEBR at one commit). A recipe file
names values for config keys, each with its exact source (a paper section, equation or table, or a
file:line of the code; tests/test_recipe.py checks both exist): ``training`` values are set for the runs of the paper targets (table2, table3, table4,
gsweep), ``features`` values are what the paper's features had (the shards come from the config, so
these are only compared), ``extra_rows`` are labelled runs beside the paper's rows, ``fixed`` the
differences no switch removes.

How a recipe reaches a run: a variant name ``<recipe>-<variant>`` (``paper-full``, ``paper-g0.4``,
``paper-mcc_reference``) trains ``<variant>`` with the recipe's training values over the config's
(kebr/variants.py ``recipe``), so its runs live beside the config's own (``full``), never over
them, and both can be compared. The config's ``paper_recipe.name`` picks the recipe of the paper
targets (``none``: the config's own settings), ``paper_recipe.overrides`` changes some of its values;
whatever differs from the paper in the end is a *deviation*, listed in every table header
(kebr/deviations.py ``table_header``, with what set it: the recipe, an override, a dataset's own key)
and by ``kebr config-check --recipe NAME`` (``describe``). A paper table's files name the recipe its rows ran
(kebr/variants.py ``table_file``: results/tables/table2-paper.md, table2-reference.md, table2-config.md), so
tables of two recipes sit side by side; the targets build the configured recipe's only (``table_of_file``).
"""

from __future__ import annotations

import copy
from typing import Any

from kebr.recipe_files import load_recipe, recipe_names

# Training keys a recipe leaves to the config: they change speed or bookkeeping, not what a run learns.
SPEED_KEYS = frozenset({"device", "num_workers", "compile", "log_every_steps"})


def split_variant(variant: str) -> tuple[str | None, str]:
    """``paper-g0.4`` -> ("paper", "g0.4"); a variant without a recipe prefix -> (None, variant)."""
    head, sep, rest = variant.partition("-")
    if sep and head in recipe_names():
        return head, rest
    return None, variant


def table_recipe(config: dict[str, Any]) -> str | None:
    """The recipe the paper targets run (None: the config's own settings)."""
    name = config["paper_recipe"]["name"]
    return None if name == "none" else name


def _set(config: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = config
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = copy.deepcopy(value)


def recipe_config(config: dict[str, Any], name: str, base: str) -> tuple[dict[str, Any], str]:
    """(config with recipe ``name``'s training values set at the top level, the variant to train).

    Order: the recipe, then ``paper_recipe.overrides`` when ``name`` is the paper targets' recipe,
    then an extra row's values (``base`` names it; the variant trained is then ``full``). Only the
    training keys change, so the copy's feature fingerprints stay the config's: variants.recipe
    uses it for the recipe alone, shards are always checked against the config itself."""
    recipe = load_recipe(name)
    out = copy.deepcopy(config)
    for key, entry in recipe["training"].items():
        _set(out, key, entry["value"])
    if name == config["paper_recipe"]["name"]:
        for key, value in config["paper_recipe"]["overrides"].items():
            _set(out, key, value)
    extra = recipe.get("extra_rows", {}).get(base)
    if extra is not None:
        for key, value in extra["training"].items():
            _set(out, key, value)
        base = "full"
    return out, base
