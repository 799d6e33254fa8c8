"""The report's renderer: sections to one self-contained HTML file and its Markdown twin."""

from __future__ import annotations

import base64
import html
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Section", "png", "fmt", "write_html", "write_markdown"]

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #bbb; margin-top: 2em; }
table.bayesvae-table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
table.bayesvae-table th, table.bayesvae-table td { border: 1px solid #ccc; padding: .25em .6em; }
table.bayesvae-table th { background: #f2f2f2; }
.verdict { padding: .7em 1em; border-left: 5px solid #999; background: #f7f7f7; }
.verdict.good { border-color: #1b9e77; } .verdict.ok { border-color: #d95f02; }
.verdict.bad { border-color: #d7191c; }
figure { margin: 1em 0; } figcaption { font-size: .85em; color: #555; }
img { max-width: 100%; height: auto; }
.meta { color: #666; font-size: .9em; } pre { background: #f7f7f7; padding: .6em; overflow-x: auto; }
"""


@dataclass
class Section:
    """One part of the report: a heading, paragraphs, tables and figures, in that order.

    Attributes
    ----------
    title : str
        The heading.
    paragraphs : list of (str, str)
        Text and its CSS class (``"verdict good"`` etc.; ``""`` for plain text).
    tables : list of (str, DataFrame)
        Caption and table.
    figures : list of (str, str, bytes)
        Name (the figure's id and file name), caption and PNG bytes.
    code : list of str
        Preformatted blocks (JSON).
    """

    title: str
    paragraphs: list[tuple[str, str]] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    figures: list[tuple[str, str, bytes]] = field(default_factory=list)
    code: list[str] = field(default_factory=list)


def png(fig: Any, dpi: int) -> bytes:
    """A matplotlib figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def fmt(value: Any) -> str:
    """A number for a table: integers plainly, floats to 4 significant digits, NaN empty."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    v = float(value)
    if np.isnan(v):
        return ""
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == round(v) and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.4g}" if abs(v) < 1e-3 or abs(v) >= 1e4 else f"{v:.4f}".rstrip("0").rstrip(".")


def write_html(path: Path, title: str, meta: str, sections: list[Section]) -> None:
    """The HTML file: inline CSS, images as ``data:`` URIs, no script or remote resource."""
    from bayesvae.compare import to_html

    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="meta">{esc(meta)}</p>',
    ]
    for s in sections:
        parts.append(f"<h2>{esc(s.title)}</h2>")
        for text, cls in s.paragraphs:
            parts.append(f'<p class="{esc(cls)}">{esc(text)}</p>' if cls else f"<p>{esc(text)}</p>")
        for caption, frame in s.tables:
            parts.append(f"<p><strong>{esc(caption)}</strong></p>")
            parts.append(to_html(frame))
        for name, caption, data in s.figures:
            b64 = base64.b64encode(data).decode("ascii")
            parts.append(
                f'<figure id="fig-{esc(name)}"><img alt="{esc(caption)}" src="data:image/png;base64,{b64}"><figcaption>{esc(caption)}</figcaption></figure>'
            )
        for block in s.code:
            parts.append(f"<pre>{esc(block)}</pre>")
    parts.append("</body></html>")
    _atomic_write(path, "\n".join(parts))


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _md_escape_any(value: Any) -> Any:
    return _md_escape(value) if isinstance(value, str) else value


def write_markdown(path: Path, title: str, meta: str, sections: list[Section]) -> None:
    """The Markdown twin, its images as PNG files in ``<stem>_files/`` beside it."""
    from bayesvae.compare import to_markdown

    folder = path.with_name(f"{path.stem}_files")
    lines = [f"# {title}", "", f"_{meta}_", ""]
    wrote_images = False
    for s in sections:
        lines += [f"## {s.title}", ""]
        for text, cls in s.paragraphs:
            lines += [f"> {text}" if cls.startswith("verdict") else text, ""]
        for caption, frame in s.tables:
            safe = frame.rename(index=_md_escape_any, columns=_md_escape_any).map(_md_escape_any)
            lines += [f"**{caption}**", "", to_markdown(safe), ""]
        for name, caption, data in s.figures:
            if not wrote_images:
                folder.mkdir(parents=True, exist_ok=True)
                wrote_images = True
            (folder / f"{name}.png").write_bytes(data)
            alt = caption.replace("[", "\\[").replace("]", "\\]")
            lines += [f"![{alt}]({folder.name}/{name}.png)", "", f"*{_md_escape(caption)}*", ""]
        for block in s.code:
            lines += ["```json", block, "```", ""]
    _atomic_write(path, "\n".join(lines))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
