"""The page the report and ``vecflow compare --html`` share: table cells, content blocks and the HTML template.

A block is a dict the template (``report_template.html``) knows how to draw: ``table``, ``image``, ``details``,
``banner``, ``fold``, ``note`` or ``not_run``. A cell is text plus a CSS class (numbers right-aligned, verdicts
pass/fail). ``render_html`` puts sections of blocks into the template, with the git revision the page was
made from.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

MAX_TABLE_ROWS = 200
MAX_LIST_ITEMS = 8
TOP_ITEMS = 5  # a {name: count} dict (top topics, drop reasons) shows its largest few
WINNER = " ★"


@dataclass(frozen=True)
class Cell:
    text: str
    cls: str = ""


def cell(value, cls: str = "") -> Cell:
    """One table cell: formatted text plus a CSS class (numbers right-aligned, booleans pass/fail)."""
    if isinstance(value, bool):
        return Cell("yes" if value else "no", cls)
    if isinstance(value, (int, float)):
        return Cell(str(value) if isinstance(value, int) else format_number(value), cls or "num")
    if value is None:
        return Cell("—", cls)
    if isinstance(value, list):
        return Cell(describe_list(value), cls)
    if isinstance(value, dict):
        return Cell(describe_counts(value), cls)
    return Cell(str(value), cls)


def verdict(value) -> Cell:
    """A gate verdict: pass (green) / fail (red); anything else as a plain cell."""
    return Cell("pass" if value else "fail", "pass" if value else "fail") if isinstance(value, bool) else cell(value)


def format_number(value: float) -> str:
    if value != value or abs(value) == float("inf"):
        return str(value)
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.3g}"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"


def describe_list(items: list) -> str:
    if not items:
        return "none"
    shown = ", ".join(cell(item).text for item in items[:MAX_LIST_ITEMS])
    if len(items) > MAX_LIST_ITEMS:
        return f"{len(items)}: {shown}, …"
    return shown if all(is_number(item) for item in items) else f"{len(items)}: {shown}"


def describe_counts(counts: dict) -> str:
    """``{"job interview": 62, "shopping": 55, ...}`` -> ``job interview (62), shopping (55), … (20 in all)``:
    the largest few of a name -> number dict; other dicts as ``key: value`` pairs."""
    if not counts:
        return "none"
    if is_counts(counts):
        ranked = sorted(counts.items(), key=lambda item: (-item[1], str(item[0])))
        shown = ", ".join(f"{k} ({_short(v)})" for k, v in ranked[:TOP_ITEMS])
        return shown + (f", … ({len(counts)} in all)" if len(counts) > TOP_ITEMS else "")
    return "; ".join(f"{k}: {cell(v).text}" for k, v in counts.items())


def _short(value) -> str:
    return str(value) if isinstance(value, int) else format_number(value)


def winner_cell(value, best: bool) -> Cell:
    base = cell(value)
    return Cell(base.text + WINNER, f"{base.cls} win".strip()) if best else base


def best_of(values: list) -> float | None:
    """The highest number of a table column, the one ``winner_cell`` marks; None for a column of one."""
    numbers = [v for v in values if is_number(v)]
    return max(numbers) if len(numbers) > 1 else None  # a column of one has no winner to mark


def hms(seconds: float | None) -> str | None:
    """Seconds as ``h:mm:ss`` (rounded to the second); None stays None (an empty cell)."""
    if seconds is None:
        return None
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def table(columns: list[str], rows: list[list], heading: str = "", caption: str = "", cls: str = "") -> dict:
    cells = [[value if isinstance(value, Cell) else cell(value) for value in row] for row in rows]
    if len(cells) > MAX_TABLE_ROWS:
        caption = f"{caption} (first {MAX_TABLE_ROWS} of {len(cells)} rows)".strip()
        cells = cells[:MAX_TABLE_ROWS]
    return {"kind": "table", "heading": heading, "caption": caption, "columns": columns, "rows": cells, "cls": cls}


def image(data_uri: str, caption: str, heading: str = "") -> dict:
    return {"kind": "image", "heading": heading, "caption": caption, "data_uri": data_uri}


def details(summary: str, text: str, heading: str = "") -> dict:
    return {"kind": "details", "heading": heading, "summary": summary, "text": text}


def banner(text: str, passed: bool, small: bool = False) -> dict:
    return {"kind": "banner", "heading": "", "text": text,
            "cls": ("pass" if passed else "fail") + (" small" if small else "")}


def fold(summary: str, blocks: list[dict], heading: str = "") -> dict:
    """Blocks folded under a one-line summary (a nested <details>)."""
    return {"kind": "fold", "heading": heading, "summary": summary, "blocks": blocks}


def note(text: str, heading: str = "") -> dict:
    return {"kind": "note", "heading": heading, "text": text}


def not_run(what: str) -> dict:
    return {"kind": "not_run", "heading": "", "text": f"{what}: not run"}


def flatten(obj, prefix: str = "", keep=lambda value: False) -> list[tuple[str, object]]:
    """Nested dicts as (dotted key, leaf value) pairs, in key order; lists, and dicts ``keep`` accepts, stay
    leaves."""
    if not isinstance(obj, dict):
        return [(prefix or "value", obj)]
    pairs = []
    for key, value in obj.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        nested = isinstance(value, dict) and value and not keep(value)
        pairs += flatten(value, dotted, keep) if nested else [(dotted, value)]
    return pairs


def is_counts(value) -> bool:
    """A {name: count} dict (top topics, drop reasons): shown as its largest few, not as one row per name."""
    return isinstance(value, dict) and bool(value) and all(isinstance(v, int) and not isinstance(v, bool)
                                                           for v in value.values())


def key_value_table(obj, heading: str, caption: str = "") -> dict:
    """A readable two-column table: nested keys joined with ' › ', {name: count} dicts as a short list."""
    rows = [[key.replace(".", " › "), value] for key, value in flatten(obj, keep=is_counts)]
    return table(["", "value"], rows, heading=heading, caption=caption)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def delta_cell(delta) -> Cell:
    if is_number(delta):
        text = f"{delta:+.4f}" if isinstance(delta, float) else f"{delta:+d}"
        return Cell(text, "num up" if delta > 0 else "num down" if delta < 0 else "num")
    return Cell("=", "num") if delta == "" else cell(delta)


def git_revision(cwd: str | Path = ".") -> str:
    """``git rev-parse HEAD`` in ``cwd`` (marked when the tree has uncommitted changes), else "unknown"."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + (" (uncommitted changes)" if dirty.stdout.strip() else "")


def render_html(title: str, sections: list[dict], git_rev: str, generated: str, config_hash: str | None) -> str:
    import jinja2

    template_text = resources.files("vecflow.ship").joinpath("report_template.html").read_text(encoding="utf-8")
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return environment.from_string(template_text).render(
        title=title, sections=sections, git_revision=git_rev, generated=generated, config_hash=config_hash
    )
