"""Report writer: one self-contained report.html (figures inlined) and a report.md twin.

    write_report(out_dir, title=..., summary=[...], sections=[Section(...)], metadata={...})

Text is escaped (HTML entities in .html, a backslash before '<' in .md), so paragraphs may hold
arbitrary strings; in summaries and paragraphs **bold** and `code` are rendered in the .html too. Tables format floats to 3 significant digits and show NaN as "–".
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from numbers import Integral, Real
from pathlib import Path

from neurohorizon.runs import write_text_atomic

MISSING = "–"
MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}


# ------------------------------------------------------------------ content model
@dataclass
class Table:
    """A table: `rows` are lists of cells aligned with `columns`.

    highlight_max / highlight_min: column names whose largest / smallest finite value is bold.
    decimals: fixed decimals for every float (bits/spike tables read best aligned), instead of
    3 significant digits.
    """

    columns: list[str]
    rows: list[list]
    caption: str = ""
    highlight_max: list[str] = field(default_factory=list)
    highlight_min: list[str] = field(default_factory=list)
    decimals: int | None = None

    def __post_init__(self):
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(
                    f"Table {self.caption!r}: row {i} has {len(row)} cells, "
                    f"expected {len(self.columns)} ({self.columns})"
                )
        unknown = [c for c in self.highlight_max + self.highlight_min if c not in self.columns]
        if unknown:
            raise ValueError(
                f"Table {self.caption!r}: highlight columns {unknown} not in {self.columns}"
            )

    def cells(self) -> list[list[tuple[str, bool]]]:
        """Formatted rows: (text, is_best) per cell."""
        best = [self._best(j) for j in range(len(self.columns))]
        return [
            [
                (format_cell(v, self.decimals), best[j] is not None and _num(v) == best[j])
                for j, v in enumerate(row)
            ]
            for row in self.rows
        ]

    def _best(self, j: int) -> float | None:
        name = self.columns[j]
        pick = max if name in self.highlight_max else min if name in self.highlight_min else None
        vals = [x for x in (_num(r[j]) for r in self.rows) if x is not None]
        return pick(vals) if pick and vals else None


@dataclass
class Section:
    """A report section. figures: image paths, or (path, caption) pairs."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list = field(default_factory=list)


def _num(v) -> float | None:
    """Finite numeric value of a cell, else None (bools and strings are not numbers)."""
    if isinstance(v, bool) or not isinstance(v, Real):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def format_cell(v, decimals: int | None = None) -> str:
    """Cell text: ints as is, floats to 3 significant digits (or `decimals` fixed), NaN/None as '–'."""
    if v is None:
        return MISSING
    if isinstance(v, Integral):  # bool included
        return str(v)
    if isinstance(v, Real):
        x = float(v)
        if math.isnan(x):
            return MISSING
        if math.isinf(x):
            return "∞" if x > 0 else "−∞"
        if decimals is not None:
            return f"{0.0 if round(x, decimals) == 0 else x:.{decimals}f}"  # never '-0.0000'
        if x == 0:
            return "0"
        if abs(x) >= 1000:
            return f"{x:.0f}"
        if abs(x) < 1e-3:
            return f"{x:.2e}"
        return f"{x:#.3g}".rstrip(".")
    return str(v)


def _figure_items(section: Section) -> list[tuple[Path, str]]:
    items = []
    for f in section.figures:
        path, caption = f if isinstance(f, tuple) else (f, "")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"report section {section.title!r}: figure {path} does not exist"
            )
        items.append((path, caption))
    return items


def _slug(text: str, used: set[str]) -> str:
    """GitHub-style anchor (lowercase, punctuation dropped, spaces to '-'), made unique."""
    base = re.sub(r"[^\w\- ]", "", text.lower()).strip().replace(" ", "-") or "section"
    slug, k = base, 1
    while slug in used:
        slug, k = f"{base}-{k}", k + 1
    used.add(slug)
    return slug


# ------------------------------------------------------------------ writing
def write_report(
    out_dir,
    *,
    title: str,
    summary: list[str],
    sections: list[Section],
    metadata: dict | None = None,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write out_dir/report.html and out_dir/report.md; returns (html_path, md_path).

    Figures outside out_dir are copied into out_dir/figures/ so the .md links stay valid.
    Raises FileExistsError if either report exists and overwrite is False (nothing is written).
    """
    out_dir = Path(out_dir)
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    existing = [str(p) for p in (html_path, md_path) if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"report already exists: {', '.join(existing)} (pass overwrite=True to replace)"
        )
    figures = {id(s): _figure_items(s) for s in sections}  # validate before writing anything
    out_dir.mkdir(parents=True, exist_ok=True)
    used = {"run-metadata"}  # the metadata section's fixed anchor
    anchors = [_slug(s.title, used) for s in sections]
    local = {id(s): [(_localise(p, out_dir), c) for p, c in figures[id(s)]] for s in sections}
    meta = dict(metadata or {})
    meta.setdefault("generated", datetime.now().isoformat(timespec="seconds"))

    write_text_atomic(html_path, _html(title, summary, sections, anchors, figures, meta))
    write_text_atomic(md_path, _markdown(title, summary, sections, anchors, local, meta))
    return html_path, md_path


def _localise(path: Path, out_dir: Path) -> Path:
    """Path of the figure relative to out_dir, copying it into out_dir/figures/ when outside."""
    path, root = path.resolve(), out_dir.resolve()
    if path.is_relative_to(root):
        return path.relative_to(root)
    dest_dir = root / "figures"
    dest_dir.mkdir(exist_ok=True)
    dest, k = dest_dir / path.name, 1
    while dest.exists() and dest.read_bytes() != path.read_bytes():
        dest, k = dest_dir / f"{path.stem}_{k}{path.suffix}", k + 1
    if not dest.exists():
        shutil.copy2(path, dest)
    return dest.relative_to(root)


def _meta_text(v) -> str:
    return v if isinstance(v, str) else json.dumps(v, default=str)


# ------------------------------------------------------------------ HTML
CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1.2em;color:#222;line-height:1.5}
h1{border-bottom:2px solid #333;padding-bottom:.2em}h2{border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.3em .7em}th{background:#f2f2f2;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}caption{caption-side:top;text-align:left;
color:#555;font-style:italic;padding-bottom:.3em}figure{margin:1em 0}img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}nav{background:#f7f7f7;padding:.5em 1em;border-radius:4px}
code{background:#f2f2f2;padding:0 .2em}.summary li{margin:.2em 0}table.meta td:first-child{font-weight:600}
"""


def _html(title, summary, sections, anchors, figures, meta) -> str:
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    if summary:
        out.append('<ul class="summary">' + "".join(f"<li>{_inline(s)}</li>" for s in summary) + "</ul>")
    toc = "".join(f'<li><a href="#{a}">{e(s.title)}</a></li>' for s, a in zip(sections, anchors))
    out.append(
        f'<nav><strong>Contents</strong><ol>{toc}<li><a href="#run-metadata">Run metadata</a></li></ol></nav>'
    )
    for s, a in zip(sections, anchors):
        out.append(f'<h2 id="{a}">{e(s.title)}</h2>')
        out += [f"<p>{_inline(p)}</p>" for p in s.paragraphs]
        out += [_html_table(t) for t in s.tables]
        out += [_html_figure(p, c) for p, c in figures[id(s)]]
    rows = "".join(
        f"<tr><td>{e(str(k))}</td><td><code>{e(_meta_text(v))}</code></td></tr>"
        for k, v in meta.items()
    )
    out.append(f'<h2 id="run-metadata">Run metadata</h2><table class="meta">{rows}</table>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _inline(text: str) -> str:
    """Escaped text with Markdown's `code` and, outside code, **bold** as HTML (the .md twin
    keeps them as written)."""
    parts = re.split(r"`([^`]+)`", str(text))  # even indices: prose; odd: code spans
    return "".join(f"<code>{html.escape(part)}</code>" if i % 2 else
                   re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(part))
                   for i, part in enumerate(parts))


def _html_table(t: Table) -> str:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in t.columns)
    body = []
    for row, raw in zip(t.cells(), t.rows):
        tds = []
        for (text, best), v in zip(row, raw):
            cls = ' class="num"' if _num(v) is not None or text == MISSING else ""
            tds.append(f"<td{cls}>{'<strong>' + e(text) + '</strong>' if best else e(text)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    cap = f"<caption>{e(t.caption)}</caption>" if t.caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _html_figure(path: Path, caption: str) -> str:
    mime = MIME.get(path.suffix.lower(), "application/octet-stream")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    alt = html.escape(caption or path.stem, quote=True)
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:{mime};base64,{data}" alt="{alt}">{cap}</figure>'


# ------------------------------------------------------------------ Markdown
def _md_text(s: str) -> str:
    """Markdown-safe text: '<' escaped so raw HTML is shown, not rendered."""
    return str(s).replace("\\", "\\\\").replace("<", "\\<")


def _md_cell(s: str) -> str:
    return _md_text(s).replace("|", "\\|").replace("\n", " ")


def _markdown(title, summary, sections, anchors, local, meta) -> str:
    out = [f"# {_md_text(title)}", ""]
    out += [f"- {_md_text(s)}" for s in summary] + ([""] if summary else [])
    out += ["## Contents", ""]
    out += [
        f"{i}. [{_md_text(s.title)}](#{a})" for i, (s, a) in enumerate(zip(sections, anchors), 1)
    ]
    out += [f"{len(sections) + 1}. [Run metadata](#run-metadata)", ""]
    for s in sections:
        out += [f"## {_md_text(s.title)}", ""]
        for p in s.paragraphs:
            out += [_md_text(p), ""]
        for t in s.tables:
            out += _md_table(t) + [""]
        for path, caption in local[id(s)]:
            out += [f"![{_md_cell(caption or path.stem)}]({path.as_posix()})"]
            out += [f"*{_md_text(caption)}*", ""] if caption else [""]
    out += ["## Run metadata", "", "| key | value |", "|---|---|"]
    out += [f"| {_md_cell(str(k))} | {_md_code(_meta_text(v))} |" for k, v in meta.items()]
    return "\n".join(out) + "\n"


def _md_code(s: str) -> str:
    """Inline code for a table cell; backticks cannot be escaped inside, so they become quotes."""
    return "`" + s.replace("`", "'").replace("|", "\\|").replace("\n", " ") + "`"


def _md_table(t: Table) -> list[str]:
    lines = [f"*{_md_text(t.caption)}*", ""] if t.caption else []
    lines.append("| " + " | ".join(_md_cell(c) for c in t.columns) + " |")
    align = [
        "---:" if any(_num(r[j]) is not None for r in t.rows) else "---"
        for j in range(len(t.columns))
    ]
    lines.append("|" + "|".join(align) + "|")
    for row in t.cells():
        lines.append(
            "| " + " | ".join(f"**{_md_cell(x)}**" if b else _md_cell(x) for x, b in row) + " |"
        )
    return lines
