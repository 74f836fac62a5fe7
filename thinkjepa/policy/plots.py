"""Evaluation figures drawn with Pillow (no plotting library needed): success rate against the
length of the bot's demonstration, one bar per agent, per level; an episode's frames as a grid; and
an episode's subgoal sheet — at each subgoal query the frame the agent saw beside the subgoal."""

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


def _panel(image: np.ndarray, caption: str, scale: int, color: str = "black") -> Image.Image:
    """``image`` enlarged ``scale`` times (nearest), under a caption band."""
    frame = Image.fromarray(np.ascontiguousarray(image)).resize(
        (image.shape[1] * scale, image.shape[0] * scale), Image.Resampling.NEAREST)
    out = Image.new("RGB", (frame.width, frame.height + 14), "white")
    out.paste(frame, (0, 14))
    ImageDraw.Draw(out).text((2, 1), caption, fill=color)
    return out


def _tile(panels: Sequence[Image.Image], columns: int, gap: int = 4) -> np.ndarray:
    w, h = max(p.width for p in panels), max(p.height for p in panels)
    columns = min(columns, len(panels))
    rows = -(-len(panels) // columns)
    sheet = Image.new("RGB", (columns * (w + gap) - gap, rows * (h + gap) - gap), "white")
    for k, p in enumerate(panels):
        sheet.paste(p, ((k % columns) * (w + gap), (k // columns) * (h + gap)))
    return np.asarray(sheet)


def frame_grid(frames: Sequence[np.ndarray], columns: int = 16, scale: int = 1) -> np.ndarray:
    """An episode's frames ``uint8 (H, W, 3)`` in rows of ``columns``, each captioned with its step."""
    if not len(frames):
        raise ValueError("frame_grid needs at least one frame")
    return _tile([_panel(f, f"t={t}", scale) for t, f in enumerate(frames)], columns)


def subgoal_sheet(
    queries: Sequence[tuple[int, str]],
    frames: Sequence[np.ndarray],
    subgoals: Sequence[np.ndarray],
    gaps: Sequence[float],
    outcome: str,
    pairs_per_row: int = 4,
    scale: int = 2,
) -> np.ndarray:
    """One pair of panels per subgoal query: the frame the agent saw when it asked (``t``, and why) and
    the subgoal drawn as a state of the layout, captioned with its latent distance to the proposed z*
    (0 when z* is that state's own latent). The last panel is the episode's final frame.

    Args:
        queries: ``(step, reason)`` per query (the policy's trace).
        frames: Every frame of the episode, ``frames[t]`` seen at step ``t``.
        subgoals: One render per query.
        gaps: One latent distance per query.
        outcome: Caption of the final frame, e.g. ``"success at t=31"``.
    """
    if not (len(queries) == len(subgoals) == len(gaps)):
        raise ValueError(f"{len(queries)} queries, {len(subgoals)} subgoal renders and {len(gaps)} gaps disagree")
    panels = []
    for (t, reason), goal, gap in zip(queries, subgoals, gaps):
        panels.append(_panel(frames[min(t, len(frames) - 1)], f"t={t} {reason}", scale))
        panels.append(_panel(goal, f"subgoal, |dz|={gap:.2f}", scale, color=(214, 39, 40)))
    panels.append(_panel(frames[-1], outcome, scale))
    return _tile(panels, 2 * pairs_per_row)


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write ``uint8 (H, W, 3)`` as a PNG atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        Image.fromarray(image).save(f, format="PNG")
    return path
