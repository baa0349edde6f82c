"""The recipe files, kebr/recipes/<name>.yaml (kebr/recipe.py says what a recipe is and how its runs
get it): their names, one file read and checked, and the config's ``paper_recipe`` checked against
them. Imports nothing from kebr, so that kebr/config.py's validation can use it without a cycle."""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

RECIPES_DIR = Path(str(resources.files("kebr") / "recipes"))
# The keys of kebr/variants.py ``recipe``'s output that hold a dotted config key's value.
SECTIONS = ("model", "pretrain", "finetune")


@functools.cache
def _names() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))


def recipe_names() -> list[str]:
    return list(_names())


@functools.cache
def load_recipe(name: str) -> dict[str, Any]:
    path = RECIPES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown recipe {name!r}: one of {recipe_names()} (kebr/recipes/)")
    recipe = yaml.safe_load(path.read_text())
    for key in recipe["training"]:
        if key != "text.model" and key.split(".")[0] not in SECTIONS:
            raise ValueError(f"{path}: training key {key!r} is not text.model nor under {SECTIONS}")
    for row in recipe.get("extra_rows", {}).values():
        if any(not k.startswith("finetune.") for k in row["training"]):
            raise ValueError(f"{path}: an extra row changes fine-tuning keys only (it shares the pretraining run)")
    return recipe


def check_overrides(config: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Problems of ``paper_recipe``: an unknown recipe, an override of a key the recipe does not set
    (a feature key belongs in its config section) or of the wrong type."""
    name = config["paper_recipe"]["name"]
    if name == "none":
        return []
    if name not in recipe_names():
        return [f"paper_recipe/name: unknown recipe {name!r}: one of {recipe_names() + ['none']}"]
    recipe = load_recipe(name)
    problems = []
    for key, value in config["paper_recipe"]["overrides"].items():
        if key in recipe["features"]:
            problems.append(f"paper_recipe/overrides/{key}: a feature key: set it in the config's "
                            f"`{key.split('.')[0]}:` section (the shards are built with it)")
        elif key not in recipe["training"]:
            problems.append(f"paper_recipe/overrides/{key}: not a training key of recipe {name!r}: one of "
                            f"{sorted(recipe['training'])}")
        else:
            try:
                jsonschema.validate(value, _subschema(schema, key))
            except jsonschema.ValidationError as error:
                problems.append(f"paper_recipe/overrides/{key}: {error.message}")
    return problems


def _subschema(schema: dict[str, Any], dotted: str) -> dict[str, Any]:
    node = schema
    for part in dotted.split("."):
        node = node["properties"][part]
        while "$ref" in node:
            node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
    return node
