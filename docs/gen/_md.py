"""Markdown helpers shared by the reference generators (imported by path, not installed)."""

from __future__ import annotations

import html
import inspect
import re

_CODE = re.compile(r"(`[^`]*`)")


def _is_code(part: str) -> bool:
    return len(part) > 1 and part.startswith("`") and part.endswith("`")


def text(value: object) -> str:
    """Plain text from the code as Markdown: HTML-escaped outside code spans (`<home>` stays visible)."""
    parts = _CODE.split(inspect.cleandoc(str(value)))
    return "".join(p if _is_code(p) else html.escape(p, quote=False) for p in parts)


def pipes(markdown: str) -> str:
    """Escape the pipes a table would split a cell on; those inside code spans are safe as they are."""
    return "".join(p if _is_code(p) else p.replace("|", "\\|") for p in _CODE.split(markdown))


def cell(value: object) -> str:
    """Text for one table cell: one line, HTML and pipes escaped."""
    flat = "" if value is None else " ".join(text(value).split())
    return pipes(flat) if flat else "-"


def code(value: object) -> str:
    """A code span that survives any backticks inside the value."""
    s = str(value)
    fence = "``" if "`" in s else "`"
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def anchor(*parts: str) -> str:
    """A stable heading id: lower case, runs of anything else as one dash."""
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")
