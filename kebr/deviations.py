"""Deviations from the paper: what a run of a recipe is trained with (``effective_values``), every way
the runs of a table differ from the paper recipe (``deviations``), the table header that lists them
(``table_header``), ``kebr config-check --recipe NAME`` (``describe``) and what the workflow prints
for a paper target (``announce``). Above kebr/experiments.py, which resolves the runs: imports run one
way (kebr/recipe.py says what a recipe is)."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from kebr.config import lookup
from kebr.experiments import NON_RESULT_KEYS
from kebr.variants import PAPER_TABLES, recipe, table_rows
from kebr.recipe import split_variant, table_recipe
from kebr.recipe_files import load_recipe

# What a run is trained with, as dotted config keys -------------------------------------------------

def effective_values(config: dict[str, Any], variant: str, finetune: str | None,
                     pretrain: str | None) -> dict[str, Any]:
    """The training keys of a recipe file (dotted) as a run of ``variant`` gets them: model and LM,
    ``pretrain.*`` as on ``pretrain`` (skipped for a variant without pretraining), ``finetune.*`` as
    on ``finetune``."""
    out = {}
    tuned = recipe(config, variant, finetune)
    out["text.model"] = tuned["model"]["text_model"]
    out.update({f"model.{k}": v for k, v in tuned["model"].items() if k != "text_model"})
    out.update(_flat("finetune", tuned["finetune"]))
    if tuned["uses_pretraining"]:
        out.update(_flat("pretrain", recipe(config, variant, pretrain)["pretrain"]))
    return out


def _flat(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flat(f"{prefix}.{key}", value))
        else:
            out[f"{prefix}.{key}"] = value
    return out


def _paper_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config as the paper recipe alone would run it: no overrides, no dataset training keys."""
    out = copy.deepcopy(config)
    out["paper_recipe"] = {"name": "paper", "overrides": {}}
    for dataset in out["datasets"].values():
        dataset.pop("pretrain", None)
        dataset.pop("finetune", None)
    return out


def _why(config: dict[str, Any], key: str, finetune: str | None, pretrain: str | None) -> str:
    if key in config["paper_recipe"]["overrides"]:
        return "paper_recipe.overrides"
    stage, _, rest = key.partition(".")
    for dataset in (finetune, pretrain):
        if dataset and stage in ("pretrain", "finetune") and lookup(config["datasets"][dataset], key) is not None:
            return f"datasets.{dataset}.{key}"
    name = table_recipe(config)
    if name is None:
        return "the config's own value (paper_recipe.name: none)"
    if name != "paper" and key in load_recipe(name)["training"]:
        return f"recipe {name} ({load_recipe(name)['training'][key]['source']})"
    return "the config"


def _show(value: Any) -> str:
    return "null" if value is None else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def deviations(config: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """Every way the runs of ``rows`` (kebr/variants.py ``table_rows``) and the config's features
    differ from the paper recipe, one line each: key, value here, the paper's value and source, why."""
    paper = load_recipe("paper")
    pristine = _paper_config(config)
    found: dict[str, dict[str, Any]] = {}
    # Keys that change no result (seeds, save_epochs) are no deviation: the table shows its seed count.
    keys = [k for k in paper["training"] if k.rsplit(".", 1)[-1] not in NON_RESULT_KEYS]
    for row in rows:
        _, base = split_variant(row["variant"])
        ours = effective_values(config, row["variant"], row["finetune"], row["pretrain"])
        want = effective_values(pristine, f"paper-{base}", row["finetune"], row["pretrain"])
        for key in keys:
            if key in want and ours.get(key) != want[key]:
                where = row["pretrain"] if key.startswith("pretrain.") else row["finetune"]
                entry = found.setdefault(key, {"paper": want[key], "values": {}})
                entry["values"].setdefault(_show(ours.get(key)), set()).add(
                    (where, _why(config, key, row["finetune"], row["pretrain"])))
    lines = []
    for key, entry in found.items():
        source = paper["training"][key]["source"]
        for value, places in entry["values"].items():
            # model and LM keys have no per-dataset value: they hold for every run of the table
            where = f" on {', '.join(sorted({d for d, _ in places}))}" if key.startswith(("pretrain.", "finetune.")) else ""
            whys = "; ".join(sorted({w for _, w in places}))
            lines.append(f"`{key}`: {value}{where} (paper: {_show(entry['paper'])}, {source}; set by {whys})")
    datasets = dict.fromkeys(d for row in rows for d in (row["finetune"], row["pretrain"]))
    extracted = [d for d in datasets if config["datasets"][d]["layout"] != "mmsa_pickle"]
    for dataset in datasets:
        if dataset not in extracted:
            lines.append(f"`{dataset}`: features read from an MMSA pickle ({config['datasets'][dataset]['pickle']}), "
                         "not extracted: its audio and vision are the pickle's, not the recipe's features")
    if extracted:
        for key, entry in paper["features"].items():
            value = lookup(config, key)
            if value != entry["value"]:
                lines.append(f"`{key}`: {_show(value)} (paper: {_show(entry['value'])}, {entry['source']}): "
                             f"{entry['why']}")
    return lines


def table_header(name: str, config: dict[str, Any], rows: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """(title, Markdown lines) for a table: the recipe its runs used, every deviation from the paper
    this config or machine forced, the extra rows and the differences no switch removes."""
    recipe_name = table_recipe(config) if name in PAPER_TABLES else None
    paper = load_recipe("paper")
    found = deviations(config, rows)
    if name in PAPER_TABLES:
        ran = (f"recipe `{recipe_name}` (kebr/recipes/{recipe_name}.yaml: {load_recipe(recipe_name)['description']})"
               if recipe_name else "this config's own training settings (`paper_recipe.name: none`)")
        title = f"{name}: {'recipe ' + recipe_name if recipe_name else 'config recipe'}, {len(found)} deviation" \
                f"{'' if len(found) == 1 else 's'} from the paper"
    else:
        ran = "this config's own training settings (the demo's; not the paper recipe)"
        title = f"{name}: config recipe (not the paper's)"
    lines = [f"Recipe: {ran}. `kebr config-check --recipe {recipe_name or 'paper'}` lists each of its values with "
             "its source.", ""]
    if found:
        lines.append("Deviations from the paper in these runs (this config's choices, or forced by what it lacks):")
        lines += [f"- {line}" for line in found]
    else:
        lines.append("Deviations from the paper in these runs: none a switch could remove.")
    extras = [row for row in rows if row.get("extra")]
    if extras:
        lines += ["", "Extra rows (`extra` in the paper row column; not in the paper): "
                  + "; ".join(sorted({f"`{split_variant(r['variant'])[1]}`: {r['extra']}" for r in extras}))]
    lines += ["", "Differences no switch removes:"] + [f"- {line}" for line in paper["fixed"]]
    return title, lines


def describe(config: dict[str, Any], name: str = "paper") -> str:
    """``kebr config-check --recipe NAME``: every value of the recipe with its source, beside what
    this config's paper-target runs get (``targets``) and what its own settings are (``own``: the
    demo's and ``pretrain_<dataset>``'s), each only where it differs (per dataset where they disagree)."""
    recipe = load_recipe(name)
    used = table_recipe(config)
    names = config["paper_datasets"]
    labelled = [names[c] for c in ("mosi", "mosei") if names[c] in config["datasets"]]
    unlabelled = [names[c] for c in ("voxceleb1", "voxceleb2") if names[c] in config["datasets"]]
    pairs = [(f, p) for f in labelled or [None] for p in unlabelled or [None]]

    def values_of(variant: str) -> dict[str, list[str]]:
        found: dict[str, set[tuple[str, str | None]]] = {}
        for finetune, pretrain in pairs:
            values = effective_values(config, variant, finetune, pretrain)
            for key in recipe["training"]:
                where = pretrain if key.startswith("pretrain.") else finetune
                found.setdefault(key, set()).add((_show(values.get(key)), where))
        return {key: sorted(v) for key, v in found.items()}

    targets, own = values_of(f"{used}-full" if used else "full"), values_of("full")

    def cell(want: str, got: list[tuple[str, str | None]]) -> str:
        if all(value == want for value, _ in got):
            return "="
        if len({value for value, _ in got}) == 1:
            return got[0][0]
        return ", ".join(f"{value} on {where}" for value, where in got)

    table = [("key", name, "targets", "own", "source")]
    notes = {}
    for key, entry in recipe["training"].items():
        want = _show(entry["value"])
        table.append((key, want, cell(want, targets[key]), cell(want, own[key]), entry["source"]))
    for key, entry in recipe["features"].items():
        want, value = _show(entry["value"]), _show(lookup(config, key))
        table.append((key, want, "=" if value == want else value, "", entry["source"]))
        if value != want:
            notes[key] = entry["why"]
    lines = [f"recipe {name} (kebr/recipes/{name}.yaml): {recipe['description']}.",
             f"{name}: the recipe's value; targets: what the runs of {', '.join(PAPER_TABLES)} get under this config ("
             + (f"paper_recipe.name: {used}" if used else "paper_recipe.name: none: the config's own settings")
             + "); own: the config's own settings (the demo, pretrain_<dataset>, finetune_<dataset>); "
             "= where it is the recipe's. Feature keys (from asr.use_gold_text on) are the config's for every "
             "target: the shards are built with them.", ""]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        lines.append("  ".join(f"{c:<{w}}" for c, w in zip(row[:4], widths)) + f"  [{row[4]}]")
        if row[0] in notes:
            lines.append(f"{'':<{widths[0]}}  -> {notes[row[0]]}")
    lines += ["", "extra rows:"]
    for row_name, row in recipe.get("extra_rows", {}).items():
        changes = ", ".join(f"{k}: {_show(v)}" for k, v in row["training"].items())
        lines.append(f"  {name}-{row_name} ({', '.join(row['tables'])}): {changes}: {row['label']} [{row['source']}]")
    lines += ["", "differences no switch removes:"] + [f"  - {line}" for line in recipe["fixed"]]
    return "\n".join(lines)


# Lines ``announce`` printed in this process: the DAG calls a target's input function more than once.
_ANNOUNCED: set[str] = set()


def announce(config: dict[str, Any], tables: Any) -> str | None:
    """What the workflow prints while it builds the DAG of a paper target (dry runs included): the
    recipe its runs train with, its values and every deviation from the paper; each line once per
    process. None for other targets (the demo) or when all was said."""
    lines = []
    for table in [t for t in tables if t in PAPER_TABLES]:
        name = table_recipe(config)
        lines.append(f"kebr: {table} runs "
                     + (f"recipe {name} (kebr/recipes/{name}.yaml; `kebr config-check --recipe {name}` lists each "
                        f"value with its source): run directories {name}-<variant>" if name
                        else "the config's own training settings (paper_recipe.name: none)"))
        if name:
            values = {**{k: v["value"] for k, v in load_recipe(name)["training"].items()},
                      **config["paper_recipe"]["overrides"]}
            lines.append(f"kebr: recipe {name}: " + ", ".join(f"{k}={_show(v)}" for k, v in values.items()))
        found = deviations(config, table_rows(table, config))
        lines += [f"kebr: {table} deviates from the paper: {d}" for d in found] or [
            f"kebr: {table}: no deviation from the paper a switch could remove"]
    new = [line for line in lines if line not in _ANNOUNCED]
    _ANNOUNCED.update(new)
    return "\n".join(new) or None
