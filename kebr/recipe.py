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
(``table_file``: results/tables/table2-paper.md, table2-reference.md, table2-config.md), so tables of
two recipes sit side by side; the targets build the configured recipe's only (``table_of_file``).
"""

from __future__ import annotations

import copy
from typing import Any

from kebr.recipe_files import load_recipe, recipe_names

PAPER_TABLES = ("table2", "table3", "table4", "gsweep")
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


# The file-name label of a paper table run with the config's own settings (paper_recipe.name: none).
CONFIG_LABEL = "config"


def table_file(table: str, config: dict[str, Any]) -> str:
    """The name of ``table``'s files under results/tables (without .md / .csv): a paper table's names
    the recipe its rows run (``table2-paper``, ``table2-reference``, ``table2-config`` for
    ``paper_recipe.name: none``); a demo table's is the table's (it always runs the config's settings)."""
    if table not in PAPER_TABLES:
        return table
    return f"{table}-{table_recipe(config) or CONFIG_LABEL}"


def table_of_file(stem: str, config: dict[str, Any]) -> str:
    """The table that the file name ``stem`` (``table_file``) holds. A paper table of a recipe other than
    the configured one is refused: no target trains a second recipe unasked, so its rows are built by
    setting ``paper_recipe.name`` to it (its runs then live beside this recipe's, which stay)."""
    table, sep, label = stem.partition("-")
    if table not in PAPER_TABLES:
        if sep:
            raise ValueError(f"table {stem!r}: only the paper tables {list(PAPER_TABLES)} name a recipe")
        return table
    if not sep:
        raise ValueError(f"table {stem!r}: a paper table's file names its recipe: {table_file(table, config)}")
    if label not in [*recipe_names(), CONFIG_LABEL]:
        raise ValueError(f"table {stem!r}: unknown recipe {label!r}: one of {recipe_names()} or {CONFIG_LABEL!r} "
                         "(paper_recipe.name: none)")
    if stem != table_file(table, config):
        configured = table_recipe(config) or "none"
        wanted = "none" if label == CONFIG_LABEL else label
        raise ValueError(f"{stem}: this config runs paper_recipe.name: {configured}, so its paper targets build "
                         f"{table_file(table, config)}; to build {stem} (and train its runs), set "
                         f"paper_recipe.name: {wanted}")
    return table


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
