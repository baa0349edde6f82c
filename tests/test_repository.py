"""The docs (README.md and every docs/*.md page) tell the truth about the code: the shard schema
version, every config key, `kebr` command, Snakemake target and test they name exist, their config
snippets validate, their links lead to a page and heading that exist, and the repository root holds
only what the Layout section names. Also: why kebr.config validates the config rather than
Snakemake's `validate`."""

import copy
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from kebr.cli import build_parser
from kebr.config import SCHEMA_PATH, load_config
from kebr.shards import SCHEMA_VERSION

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
# The front page and the pages it links, one per topic: every check below reads all of them.
PAGES = {path.relative_to(REPO).as_posix(): path.read_text()
         for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]}
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
CODE_BLOCKS = [block for text in PAGES.values() for block in re.findall(r"```(\w*)\n(.*?)```", text, re.S)]
INLINE = [t for text in PAGES.values()
          for t in re.findall(r"(?<!`)`([^`\n]+)`(?!`)", re.sub(r"```.*?```", "", text, flags=re.S))]


def schema_paths(node: dict, prefix: str = "") -> set[str]:
    """Every key path of the config schema, e.g. 'finetune.mcc.g'; a dataset's keys as 'datasets.*.root'."""
    if "$ref" in node:  # "#/$defs/<name>"
        node = SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]]
    paths = set()
    for name, sub in node.get("properties", {}).items():
        paths |= {prefix + name} | schema_paths(sub, prefix + name + ".")
    if isinstance(node.get("additionalProperties"), dict):
        paths |= schema_paths(node["additionalProperties"], prefix + "*.")
    return paths


def test_readme_is_a_front_page_that_links_every_docs_page():
    """Under 200 lines, and every page under docs/ is one of its links."""
    assert len(README.splitlines()) < 200
    linked = {target.split("#")[0] for target in re.findall(r"\]\((docs/[^)\s]+)\)", README)}
    pages = {name for name in PAGES if name.startswith("docs/")}
    assert len(pages) >= 10 and sorted(pages - linked) == []


def test_docs_name_the_shard_schema_version():
    versions = {v for text in PAGES.values() for v in re.findall(r"schema version (\d+)", text)}
    assert versions == {str(SCHEMA_VERSION)}


def test_docs_config_keys_exist():
    paths = schema_paths(SCHEMA)
    names = {p.rsplit(".", 1)[-1] for p in paths}
    top = {p for p in paths if "." not in p}
    files = ("md", "csv", "tsv", "png", "svg", "html", "yaml", "json", "h5", "py", "smk", "bin")
    dotted = [t for t in INLINE if re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", t) and t.split(".")[0] in top
              and t.rsplit(".", 1)[1] not in files]
    keyed = [t.split(":")[0] for t in INLINE if re.fullmatch(r"[a-z_]+:( .*)?", t)]
    assert len(dotted) >= 4 and len(keyed) >= 8
    assert [t for t in dotted if t not in paths] == []
    assert [t for t in keyed if t not in names] == []
    for lang, block in CODE_BLOCKS:
        if lang == "yaml":  # a config snippet must be valid config
            jsonschema.Draft202012Validator(SCHEMA).validate(yaml.safe_load(block))


def test_docs_commands_exist():
    parser = build_parser()
    commands = {name for a in parser._actions if hasattr(a, "choices") and a.choices for name in a.choices}
    named = [line.split()[1] for _, block in CODE_BLOCKS for line in block.splitlines() if line.startswith("kebr ")]
    named += [t.split()[1] for t in INLINE if t.startswith("kebr ") and not t.startswith("kebr --")]
    assert len(named) >= 4
    assert sorted(set(named) - commands) == []


def test_docs_snakemake_targets_exist():
    listed = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--list-target-rules"],
                            cwd=REPO, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr[-2000:]
    rules = set(listed.stdout.split())
    datasets = {name for lang, block in CODE_BLOCKS if lang == "yaml"
                for name in yaml.safe_load(block).get("datasets", {})} | {"<dataset>"}
    named = set()
    for _, block in CODE_BLOCKS:
        for line in block.splitlines():
            if line.startswith("snakemake ") or " snakemake " in line:
                words = shlex.split(line.split("snakemake ", 1)[1].split("#")[0].split("&&")[0])
                named |= {w for w in words if re.fullmatch(r"[a-z][a-z0-9_]*", w)}
    named |= {t for t in INLINE if re.fullmatch(r"(features|pretrain|finetune)_<dataset>|table\d|gsweep|demo", t)}
    assert {"demo", "table2", "features_<dataset>"} <= named
    demo_dataset = next(iter(yaml.safe_load((REPO / "config.yaml").read_text())["datasets"]))
    for target in named:
        prefix, _, dataset = target.partition("_")
        if target not in rules:
            assert dataset in datasets and f"{prefix}_{demo_dataset}" in rules, f"the docs name target {target!r}"


def test_repository_root_holds_only_what_the_layout_section_names():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    sections = [text.split("\n## Layout\n", 1)[1] for text in PAGES.values() if "\n## Layout\n" in text]
    assert len(sections) == 1, "exactly one page has a '## Layout' section"
    layout = sections[0].split("\n## ", 1)[0]
    named = {t.rstrip("/").split("/")[0] for t in re.findall(r"`([^`]+)`", layout)}
    root = {path.split("/")[0] for path in tracked.stdout.splitlines()}
    assert sorted(root - named) == []


def test_snakemake_validation_would_fill_a_datasets_overrides():
    """Why kebr.config keeps its own validator: Snakemake's `validate` fills the same defaults everywhere
    but in a dataset's `pretrain:`/`finetune:` overrides, where it fills every key, so a top-level
    setting (say `finetune.seeds`) would no longer reach that dataset's runs."""
    from snakemake.utils import validate

    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    ours = load_config(REPO / "config.yaml")
    theirs = copy.deepcopy(raw)
    validate(theirs, str(SCHEMA_PATH), set_default=True)
    assert {k: v for k, v in theirs.items() if k != "datasets"} == {k: v for k, v in ours.items() if k != "datasets"}
    for name, dataset in ours["datasets"].items():
        for key, value in dataset.items():
            if key in ("pretrain", "finetune"):
                assert value == raw["datasets"][name][key]  # ours: only the keys the user wrote
                assert theirs["datasets"][name][key].keys() > value.keys()  # Snakemake's: every default
            else:
                assert theirs["datasets"][name][key] == value


def test_every_test_the_docs_cite_exists():
    """The Guarantees page cites `test_file.py::test_name` (and `::test_name` for the same file)."""
    cited = []
    for page, text in PAGES.items():
        current = None
        for ref in re.findall(r"`((?:test_\w+\.py)?(?:::test_\w+)?)`", text):
            file, _, name = ref.partition("::")
            current = file or current
            if name:
                assert current, f"{page} cites ::{name} before naming its file"
                cited.append((page, current, name))
            elif file:
                cited.append((page, file, None))
    assert len(cited) > 20
    for page, file, name in cited:
        path = REPO / "tests" / file
        assert path.is_file(), f"{page} cites {file}, which does not exist"
        if name:
            assert re.search(rf"^def {name}\(", path.read_text(), re.M), f"{page} cites {file}::{name}, not defined"


# ---------------------------------------------------------------- links between the pages

def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation but - and _ dropped, spaces
    as -, a repeated anchor numbered (-1, -2). Lines in fenced code are not headings."""
    anchors, counts = set(), {}
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", re.sub(r"```.*?```", "", text, flags=re.S), re.M):
        anchor = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(f"{anchor}-{counts[anchor]}" if anchor in counts else anchor)
        counts[anchor] = counts.get(anchor, 0) + 1
    return anchors


def broken_links(repo: Path) -> list[str]:
    """Markdown links and images of README.md and docs/*.md that lead nowhere: a path (relative to the
    page) that is not a file of the repository, or an anchor that is no heading of its page."""
    broken = []
    for page in [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"```.*?```", "", text, flags=re.S)):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(repo).as_posix()} links {target}"
            if not (file.is_file() and file.is_relative_to(repo.resolve())):
                broken.append(where)
            elif anchor and anchor not in heading_anchors(file.read_text()):
                broken.append(where + " (no such heading)")
    return broken


def test_every_link_in_the_docs_leads_to_a_page_and_heading():
    links = [t for text in PAGES.values() for t in re.findall(r"\]\(([^)\s]+)\)", text)]
    assert len(links) > 20 and sum("#" in t for t in links) > 5  # not vacuous
    assert broken_links(REPO) == []


def test_a_broken_link_or_anchor_is_caught(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("[a](docs/a.md), [b](docs/b.md), [c](docs/a.md#two-words), "
                                        "[d](docs/a.md#nope), ![e](docs/e.png), [f](https://example.org/x)\n")
    (tmp_path / "docs" / "a.md").write_text("# A\n\n## Two words (`x.y`)\n\n```\n# not a heading\n```\n"
                                            "[g](#two-words-xy), [h](#not-a-heading), [i](../README.md)\n")
    assert broken_links(tmp_path) == [
        "README.md links docs/b.md",
        "README.md links docs/a.md#two-words (no such heading)",
        "README.md links docs/a.md#nope (no such heading)",
        "README.md links docs/e.png",
        "docs/a.md links #not-a-heading (no such heading)",
    ]


# ---------------------------------------------------------------- documents the code cites

# Where citations live: the package, benchmarks, workflow, scripts, docs and the root's own files.
CITING_FOLDERS = ("kebr", "bench", "rules", "scripts", "docs")
CITING_ROOT_FILES = ("README.md", "pyproject.toml", "Snakefile", "config.yaml")
TEXT_SUFFIXES = {".py", ".smk", ".sh", ".yaml", ".yml", ".toml", ".md", ".json", ".txt", ".cfg"}
# A path ending in .md, with any folders before it (../shared/spec/DATA.md, docs/DATA.md, DATA.md).
MD_PATH = re.compile(r"(?<![\w/.-])((?:\.\.?/)*(?:[\w-]+/)*[\w.-]+\.md)\b")


def citing_files(repo: Path) -> list[Path]:
    files = [repo / name for name in CITING_ROOT_FILES if (repo / name).is_file()]
    for folder in CITING_FOLDERS:
        files += sorted(p for p in (repo / folder).rglob("*")
                        if p.is_file() and (p.suffix in TEXT_SUFFIXES or p.name == "Snakefile")
                        and "__pycache__" not in p.parts)
    return files


def is_document(path: str) -> bool:
    """A cited document, as opposed to a Markdown file the code writes: documents have upper-case names
    (README.md, DATA.md, KEBR-SPEC.md) or sit in a docs/ or spec/ folder; what the code writes is lower
    case (results/tables/demo.md, Snakemake's output.md)."""
    stem = path.rsplit("/", 1)[-1][: -len(".md")]
    return (any(c.isalpha() for c in stem) and stem == stem.upper()) or bool(
        re.search(r"(^|/)(docs|spec)/", path))


def doc_citations(repo: Path) -> list[tuple[str, str]]:
    """(where: 'file:line', cited path) for every document cited in the citing files."""
    out = []
    for file in citing_files(repo):
        for number, line in enumerate(file.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            out += [(f"{file.relative_to(repo)}:{number}", path) for path in MD_PATH.findall(line)
                    if is_document(path)]
    return out


def missing_citations(repo: Path) -> list[str]:
    """Citations that name no document in ``repo``. A bare name (DATA.md) must be some document's name;
    a path must lead to a file inside the repository, from its root or from the citing file's folder
    (a Markdown link in docs/). A path out of the repository (../shared/spec/DATA.md) counts as missing:
    a user's checkout has only the repository."""
    names = {p.name for p in repo.rglob("*.md") if ".venv" not in p.parts and ".git" not in p.parts}
    missing = []
    for where, path in doc_citations(repo):
        if "/" not in path:
            found = path in names
        else:
            base = (repo / where.split(":")[0]).parent
            found = any(c.is_file() and c.resolve().is_relative_to(repo.resolve())
                        for c in (repo / path, base / path))
        if not found:
            missing.append(f"{where} cites {path}")
    return missing


def test_every_document_the_code_cites_exists():
    cited = doc_citations(REPO)
    # Not vacuous: the citations this test was written for are found ...
    assert ("kebr/ingest.py:3", "docs/DATA.md") in cited
    assert ("pyproject.toml", "docs/DATA.md") in {(w.split(":")[0], p) for w, p in cited}
    assert any(p == "KEBR-SPEC.md" and w.startswith("kebr/mcc.py:") for w, p in cited)
    assert len(cited) > 15
    assert missing_citations(REPO) == []


def test_a_missing_or_outside_document_is_caught(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "kebr").mkdir()
    (tmp_path / "docs" / "DATA.md").write_text("See [the spec](KEBR-SPEC.md) and [arch](ARCHITECTURE.md).\n")
    (tmp_path / "docs" / "ARCHITECTURE.md").write_text("# arch\n")
    (tmp_path / "README.md").write_text("Data: docs/DATA.md. Tables: `results/tables/demo.md`, output.md.\n")
    (tmp_path / "kebr" / "a.py").write_text(
        '"""Layouts (spec/DATA.md); hours from ../shared/spec/DATA.md; see DATA.md and docs/DATA.md."""\n'
        'OUT = "results/tables/{table}.md"  # written, not cited\n')
    assert missing_citations(tmp_path) == [  # root files, then kebr/, bench/, rules/, scripts/, docs/
        "kebr/a.py:1 cites spec/DATA.md",
        "kebr/a.py:1 cites ../shared/spec/DATA.md",
        "docs/DATA.md:1 cites KEBR-SPEC.md",
    ]
    (tmp_path / "docs" / "KEBR-SPEC.md").write_text("# spec\n")
    (tmp_path / "kebr" / "a.py").write_text('"""Layouts (docs/DATA.md)."""\n')
    assert missing_citations(tmp_path) == []
