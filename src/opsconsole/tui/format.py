"""Turning database values into table cells: numbers, durations, statuses, JSON summaries.

Status colours come from the active Textual theme (`tone()`), so tables follow a theme switch.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Mapping
from typing import Any

from rich.text import Text
from textual.app import App

from opsconsole.output import to_jsonable

TONES = ("success", "warning", "error", "accent", "secondary")


def tone(app: App, name: str) -> str:
    """A theme colour as a Rich style string (falls back to a plain colour name). `secondary` marks
    what is low-key (info, never run, parked): dimmed text, readable on every theme (the themes'
    secondary colour is a dark blue that vanished on the dark ones)."""
    if name == "foreground":
        return ""
    if name == "secondary":
        return "dim"
    theme = app.current_theme
    value = getattr(theme, name, None) if theme is not None else None
    fallback = {"success": "green", "warning": "yellow", "error": "red", "accent": "cyan"}.get(name, "")
    return str(value) if value else fallback


def styled(app: App, text: str, name: str, bold: bool = False, justify: str | None = None) -> Text:
    style = tone(app, name)
    return Text(text, style=f"bold {style}" if bold else style, justify=justify)  # type: ignore[arg-type]


def num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "—"
    if isinstance(value, int) and digits == 0:
        return f"{value:,}"
    try:
        return f"{float(value):,.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def cell_num(value: Any, digits: int = 0) -> Text:
    return Text(num(value, digits), justify="right")


def ms(value: Any) -> str:
    if value is None:
        return "—"
    v = float(value)
    return f"{v:,.0f} ms" if v >= 10 else f"{v:,.1f} ms"


def pct(value: Any) -> str:
    return "—" if value is None else f"{float(value):.1f}%"


def interval_text(value: Any) -> str:
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
        return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"
    return "—" if value is None else str(value)


def plain(value: Any, width: int | None = None, keep_end: bool = False) -> Text:
    """Any value as a single-line Text (never parsed as markup), cut to width: its end cut off, or
    with keep_end its start (names that share a prefix and differ at the end, like worker loops)."""
    if value is None:
        text = "—"
    elif isinstance(value, Mapping | list):
        text = json.dumps(to_jsonable(value), ensure_ascii=False)
    elif isinstance(value, decimal.Decimal | float):
        text = num(value, 2)
    else:
        text = str(value)
    text = " ".join(text.split())
    if width is not None and len(text) > width:
        text = "…" + text[len(text) - width + 1 :] if keep_end else text[: width - 1] + "…"
    return Text(text)


def summarize(value: Any, width: int = 40) -> Text:
    """A compact k=v rendering of a JSON object for a table cell."""
    if isinstance(value, Mapping):
        parts = []
        for key, v in value.items():
            if v is None or v == [] or v == {}:
                continue
            if isinstance(v, list):
                shown = ",".join(str(x) for x in v[:5]) + ("…" if len(v) > 5 else "")
                parts.append(f"{key}=[{shown}]")
            elif isinstance(v, Mapping):
                parts.append(f"{key}={{…}}")
            else:
                parts.append(f"{key}={v}")
        return plain(" ".join(parts) or "—", width)
    return plain(value, width)


def pretty_json(value: Any) -> str:
    return json.dumps(to_jsonable(value), indent=2, ensure_ascii=False, sort_keys=True)


def spark(values: list[float | None], width: int = 12) -> str:
    """A unicode mini trend: ▁▂▃▄▅▆▇█ scaled between the values' min and max."""
    bars = "▁▂▃▄▅▆▇█"
    vals = [v for v in values[-width:]]
    known = [float(v) for v in vals if v is not None]
    if not known:
        return ""
    lo, hi = min(known), max(known)
    out = []
    for v in vals:
        if v is None:
            out.append(" ")
        elif hi == lo:
            out.append(bars[-1] if hi > 0 else bars[0])
        else:
            out.append(bars[int((float(v) - lo) / (hi - lo) * (len(bars) - 1))])
    return "".join(out)
