"""HTML pages for the report: tables and the config as text a browser shows."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

# HTML pages for the report: tables and the config as text a browser shows ---------------------------

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title><style>
body {{font-family: sans-serif; font-size: 13px; margin: 1em; color: #111}}
table {{border-collapse: collapse}} th, td {{border: 1px solid #999; padding: 3px 7px; text-align: right}}
td:first-child, th:first-child {{text-align: left}} th {{background: #eee}} pre {{font-size: 13px}}
</style></head><body>
{body}
</body></html>
"""


def _inline(text: str) -> str:
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def markdown_html(markdown: str) -> str:
    """The Markdown that kebr writes (a '# ' title, paragraphs, pipe tables) as an HTML page."""
    out, table = [], []

    def flush() -> None:
        if table:
            cells = [[_inline(c.strip()) for c in line.strip().strip("|").split("|")] for line in table]
            body = [cells[0]] + [r for r in cells[1:] if not all(set(c) <= set("-: ") for c in r)]
            out.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in body[0]) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body[1:])
                       + "</table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    flush()
    title = next((line[2:] for line in markdown.splitlines() if line.startswith("# ")), "kebr")
    return PAGE.format(title=html.escape(title), body="\n".join(out))


def clips_html(bars: list[tuple[str, str, int]], total: int, dataset: str) -> str:
    rows = "".join(f"<tr><td>{html.escape(s)}</td><td>{html.escape(label)}</td><td>{n:,}</td>"
                   f"<td>{100 * n / total:.1f}</td></tr>" for s, label, n in bars)
    body = (f"<h1>{html.escape(dataset)}: what happened to its {total:,} input clips</h1>"
            "<p>From clips.tsv (every input clip); reasons grouped by their text before the clip-specific "
            "detail.</p><table><tr><th>status</th><th>reason</th><th>clips</th><th>%</th></tr>"
            f"{rows}</table>")
    return PAGE.format(title=f"{html.escape(dataset)} clips", body=body)


def config_html(config: dict[str, Any], source: str) -> str:
    import yaml

    body = (f"<h1>Configuration</h1><p>{html.escape(source)} as validated against "
            "kebr/schemas/config.schema.yaml, every default filled in (what <code>kebr config-check</code> "
            f"prints).</p><pre>{html.escape(yaml.safe_dump(config, sort_keys=False))}</pre>")
    return PAGE.format(title="kebr configuration", body=body)


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
