"""The one reader and writer of kebr's TSV tables: plans, status tables, clips.tsv, clips_summary.tsv.

Any value round-trips exactly: every Unicode string (tabs, quotes, carriage returns, line feeds,
NUL and every other control character included) and every surrogate-escaped file name (the bytes
of a name that is not UTF-8, as ``os.fsdecode`` spells them).

The format
----------
UTF-8, tab-separated, one header row with the table's columns, ``\\n`` after each record, and EVERY
field quoted (``"..."``, a quote inside doubled), so a line feed or carriage return inside a value
is part of the value and never ends a row (``csv`` with ``QUOTE_ALL``). Undecodable bytes of a file
name are written back as those bytes (``surrogateescape``). Quoting was chosen over escaping
(``\\n`` as two characters) so that clip ids such as ``id00012/ab\\xff/00001`` read the same in any
CSV reader (pandas' default C parser alone cuts a value at a NUL), and over refusing such values
at ingest because VoxCeleb clip ids come from directory names, which may hold any byte but ``/``.

A COUNTED table (the plan) ends with one more line, ``# <n> rows``: its own row count, so a table
cut short at a row boundary is caught too. clips.tsv and the status tables have no such line (they
are read by pandas and the plots; kebr checks their rows against the plan instead).

Reading checks the whole file, so a damaged table fails loudly instead of losing or inventing rows:
the header must be the table's columns, every record must have exactly that many fields, the file
must be exactly what this writer writes for the records read (a stray unquoted carriage return, a
lost quote or an unquoted field shows up as the first line that differs), and a counted table's
last line must give the number of records read. Writing refuses a value that cannot come back
exactly (surrogates that no decoding of a file name gives: a lone high surrogate, or escaped bytes
that together spell valid UTF-8), naming its row and column.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

ENCODING, ERRORS = "utf-8", "surrogateescape"
_COUNT = re.compile(r"# (\d+) rows")
# A transcript can be longer than csv's default limit of 131,072 characters per field.
_FIELD_LIMIT = 1 << 30


class TableError(ValueError):
    """A TSV table that is not as kebr writes it (damaged, cut short, of another layout)."""


def _dump(fields: list[str], rows: list[list[str]], count: bool) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_ALL, strict=True)
    writer.writerow(fields)
    writer.writerows(rows)
    if count:
        buffer.write(f"# {len(rows)} rows\n")
    return buffer.getvalue()


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _exact(value: str) -> bool:
    """Whether ``value`` comes back unchanged through its UTF-8 bytes (surrogate escapes allowed)."""
    try:
        return value.encode(ENCODING, ERRORS).decode(ENCODING, ERRORS) == value
    except UnicodeEncodeError:
        return False


def write_table(path: str | os.PathLike[str], fields: list[str], rows: Iterable[Mapping[str, Any]],
                count: bool = False) -> Path:
    """Write ``rows`` (dicts over ``fields``; None is written as "") to ``path`` atomically.

    ``count``: end the table with its row count (see the module docstring). A key outside
    ``fields`` or a value that cannot be read back exactly is a ``ValueError`` naming its row.
    """
    path = Path(path)
    cells: list[list[str]] = []
    for number, row in enumerate(rows, start=1):
        extra = set(row) - set(fields)
        if extra:
            raise ValueError(f"{path}: row {number} has columns {sorted(extra)} outside {fields}")
        cells.append([_cell(row.get(f)) for f in fields])
    text = _dump(fields, cells, count)
    try:
        data = text.encode(ENCODING, ERRORS)
    except UnicodeEncodeError:
        data = b""
    if data.decode(ENCODING, ERRORS) != text:  # rare: find the value to name it
        for number, row_cells in enumerate(cells, start=1):
            for field, value in zip(fields, row_cells):
                if not _exact(value):
                    raise ValueError(f"{path}: row {number}, column {field!r}: {value!r} cannot be written to UTF-8 "
                                     "and read back unchanged (surrogates that no decoding of a file name gives)")
        raise ValueError(f"{path}: the table's text does not survive UTF-8")  # a header; not reached in practice
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def read_table(path: str | os.PathLike[str], fields: list[str], count: bool = False) -> list[dict[str, str]]:
    """The rows of a table ``write_table`` wrote with these ``fields`` (and ``count``), each checked
    (see the module docstring); raises ``TableError`` naming the file and line of the damage."""
    path = Path(path)
    text = path.read_bytes().decode(ENCODING, ERRORS)
    body, expected = text, None
    if count:
        start = text.rfind("\n", 0, len(text) - 1) + 1
        match = _COUNT.fullmatch(text[start:].removesuffix("\n"))
        if match is None or not text.endswith("\n"):
            raise TableError(f"{path}: damaged table: its last line is not its row count ('# <n> rows'): cut short, "
                             "or written by another tool or an older kebr; replan it")
        body, expected = text[:start], int(match.group(1))
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, _FIELD_LIMIT))
    reader = csv.reader(io.StringIO(body, newline=""), delimiter="\t", strict=True)
    try:
        records = list(reader)
    except csv.Error as exc:
        raise TableError(f"{path}: damaged table: line {reader.line_num}: {exc}") from None
    finally:
        csv.field_size_limit(limit)
    if not records or records[0] != fields:
        raise TableError(f"{path}: damaged table: its header is {records[0] if records else 'missing'}, "
                         f"not {fields}")
    for number, record in enumerate(records[1:], start=1):
        if len(record) != len(fields):
            raise TableError(f"{path}: damaged table: row {number} has {len(record)} fields, not {len(fields)} "
                             f"(a line break or tab outside quotes): {record[:len(fields) + 1]!r}")
    rows = records[1:]
    canonical = _dump(fields, rows, count=False)
    if canonical != body:
        at = next((i for i, (a, b) in enumerate(zip(canonical, body)) if a != b), min(len(canonical), len(body)))
        raise TableError(f"{path}: damaged table: line {body.count(chr(10), 0, at) + 1} is not as kebr writes "
                         f"it (an unquoted field, a stray quote or line break): {body[max(0, at - 20):at + 20]!r}")
    if expected is not None and expected != len(rows):
        raise TableError(f"{path}: damaged table: it says it holds {expected} rows but holds {len(rows)}")
    return [dict(zip(fields, record)) for record in rows]


def counted_rows(path: str | os.PathLike[str]) -> int:
    """The row count a counted table states on its last line, reading only its end (for progress
    views; ``read_table`` checks it)."""
    path = Path(path)
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64))
        tail = f.read().decode(ENCODING, ERRORS)
    match = _COUNT.fullmatch(tail.removesuffix("\n").rsplit("\n", 1)[-1])
    if match is None:
        raise TableError(f"{path}: damaged table: its last line is not its row count ('# <n> rows')")
    return int(match.group(1))
