"""Geometry for the server-rendered SVG charts (the templates draw them; no JavaScript is needed to read them)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Gauge:
    path_bg: str
    path_value: str
    percent: str
    ratio: float


def gauge(value: int, target: int, *, cx: float = 120, cy: float = 120, r: float = 100) -> Gauge:
    """A half-circle gauge from the left (0) to the right (target)."""
    ratio = 0.0 if target <= 0 else max(0.0, min(1.0, value / target))
    angle = math.pi * (1 - ratio)
    x, y = cx + r * math.cos(angle), cy - r * math.sin(angle)
    bg = f"M {cx - r:.1f} {cy:.1f} A {r:.1f} {r:.1f} 0 0 1 {cx + r:.1f} {cy:.1f}"
    val = f"M {cx - r:.1f} {cy:.1f} A {r:.1f} {r:.1f} 0 0 1 {x:.1f} {y:.1f}"
    percent = f"{(value / target * 100) if target else 0:.2f}%"
    return Gauge(bg, val, percent, ratio)


def bars(rows: list[dict[str, Any]], *, width: float = 560, row_h: float = 22,
         label_w: float = 150) -> dict[str, Any]:
    """Horizontal bars per row: registered (light), open (middle), shared (dark), on one scale."""
    top = max([int(r["registered"]) for r in rows] + [1])
    scale = (width - label_w - 110) / top  # room for the numbers after the longest bar
    out = []
    for i, r in enumerate(rows):
        y = 24 + i * row_h
        out.append({**r, "y": y, "w_registered": round(int(r["registered"]) * scale, 1),
                    "w_open": round(int(r["open"]) * scale, 1), "w_shared": round(int(r["shared"]) * scale, 1)})
    return {"rows": out, "width": width, "height": 30 + len(rows) * row_h, "label_w": label_w, "max": top}


def lines(points: list[dict[str, Any]], series: tuple[str, ...] = ("registered", "open", "shared"), *,
          width: float = 640, height: float = 240, pad: float = 40) -> dict[str, Any]:
    """Polylines of the monthly trend, one per series, on a shared y scale starting at zero."""
    top = max([int(p[s]) for p in points for s in series] + [1])
    n = len(points)
    step = (width - 2 * pad) / max(n - 1, 1)
    coords: dict[str, list[tuple[float, float]]] = {s: [] for s in series}
    labels = []
    for i, p in enumerate(points):
        x = pad + i * step
        for s in series:
            coords[s].append((round(x, 1), round(height - pad - int(p[s]) / top * (height - 2 * pad), 1)))
        labels.append({"x": round(x, 1), "text": p["month"], "show": n <= 12 or i % max(1, n // 8) == 0 or i == n - 1})
    return {"width": width, "height": height, "pad": pad, "max": top,
            "series": {s: " ".join(f"{x},{y}" for x, y in c) for s, c in coords.items()},
            "points": {s: c for s, c in coords.items()}, "labels": labels}
