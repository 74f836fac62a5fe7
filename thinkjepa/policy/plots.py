"""Evaluation figures drawn with Pillow (no plotting library needed): success rate against the
length of the bot's demonstration, one bar per agent, per level; and episode strips as PNG files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from thinkjepa.checkpoint import atomic_path
from thinkjepa.policy.stats import EpisodeResult

COLORS = {"bot": (90, 90, 90), "flat": (31, 119, 180), "hierarchical": (214, 39, 40), "oracle": (44, 160, 44)}


def length_bins(expert_steps: Sequence[int], bins: int = 4) -> list[tuple[int, int]]:
    """Up to ``bins`` contiguous, non-empty ``(low, high)`` ranges of demonstration length (quantiles)."""
    lengths = np.asarray(sorted(expert_steps))
    if len(lengths) == 0:
        return []
    edges = np.unique(np.quantile(lengths, np.linspace(0, 1, bins + 1)).round().astype(int))
    out, low = [], int(lengths[0])
    for high in edges[1:]:
        if high >= low:
            out.append((low, int(high)))
            low = int(high) + 1
    if low <= lengths[-1]:
        out.append((low, int(lengths[-1])))
    return out


def success_by_length(results: Sequence[EpisodeResult], level: str, bins: int = 4) -> tuple[list, dict]:
    """``(bins, {mode: [(successes, episodes) per bin]})`` for the episodes of ``level`` with a demonstration."""
    rows = [r for r in results if r.level == level and r.expert_steps > 0]
    ranges = length_bins([r.expert_steps for r in rows], bins)
    modes = [m for m in COLORS if any(r.mode == m for r in rows)]
    table = {
        m: [(sum(r.success for r in rows if r.mode == m and lo <= r.expert_steps <= hi),
             sum(1 for r in rows if r.mode == m and lo <= r.expert_steps <= hi)) for lo, hi in ranges]
        for m in modes
    }
    return ranges, table


def plot_success_by_length(results: Sequence[EpisodeResult], level: str, size: tuple[int, int] = (560, 320)) -> np.ndarray:
    """A grouped bar chart ``uint8 (H, W, 3)``: success rate per demonstration-length bin and agent."""
    ranges, table = success_by_length(results, level)
    w, h = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    left, right, top, bottom = 40, w - 10, 28, h - 40
    draw.text((left, 6), f"{level}: success vs bot demonstration length", fill="black")
    draw.line([(left, top), (left, bottom), (right, bottom)], fill="black")
    for frac in (0.0, 0.5, 1.0):
        y = bottom - frac * (bottom - top)
        draw.text((4, y - 6), f"{frac:.0%}", fill="black")
        draw.line([(left - 3, y), (left, y)], fill="black")
    if ranges and table:
        group = (right - left) / len(ranges)
        bar = group * 0.8 / len(table)
        for b, (lo, hi) in enumerate(ranges):
            x0 = left + b * group + group * 0.1
            for k, (mode, counts) in enumerate(table.items()):
                wins, n = counts[b]
                rate = wins / n if n else 0.0
                xa = x0 + k * bar
                draw.rectangle([xa, bottom - rate * (bottom - top), xa + bar - 2, bottom], fill=COLORS[mode])
            draw.text((x0, bottom + 4), f"{lo}-{hi} steps (n={counts[b][1]})", fill="black")
        for k, mode in enumerate(table):
            x = left + 10 + k * 110
            draw.rectangle([x, h - 16, x + 10, h - 6], fill=COLORS[mode])
            draw.text((x + 14, h - 18), mode, fill="black")
    return np.asarray(img)


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write ``uint8 (H, W, 3)`` as a PNG atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        Image.fromarray(image).save(f, format="PNG")
    return path
