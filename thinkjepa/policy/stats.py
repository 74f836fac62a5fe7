"""Summaries of evaluation episodes: success rates with 95 % Wilson intervals, lengths, timing."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval for a binomial proportion (sensible at 0 % and 100 %)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass
class EpisodeResult:
    """One evaluated episode."""

    level: str
    mode: str
    seed: int
    mission: str
    success: bool
    steps: int
    expert_steps: int
    planner_seconds: float = 0.0
    thinker_seconds: float = 0.0
    thinker_calls: int = 0
    unreachable_requeries: int = 0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def summarize(results: Sequence[EpisodeResult]) -> dict[str, Any]:
    """Aggregate episodes of one (level, mode)."""
    n = len(results)
    wins = sum(r.success for r in results)
    lo, hi = wilson_interval(wins, n)
    steps = sum(r.steps for r in results)
    won = [r for r in results if r.success]
    plan_s = sum(r.planner_seconds for r in results)
    think_s = sum(r.thinker_seconds for r in results)
    return {
        "episodes": n,
        "successes": wins,
        "success_rate": wins / n if n else 0.0,
        "ci95": [lo, hi],
        "mean_length": sum(r.steps for r in won) / len(won) if won else None,
        "mean_expert_length": sum(r.expert_steps for r in results) / n if n else None,
        # the agent's steps over the bot's on the same seeds, averaged over the agent's successes
        "length_vs_expert": sum(r.steps / max(r.expert_steps, 1) for r in won) / len(won) if won else None,
        "planning_ms_per_step": 1e3 * plan_s / steps if steps else None,
        "thinker_share": think_s / (think_s + plan_s) if think_s + plan_s > 0 else 0.0,
        "thinker_calls_per_episode": sum(r.thinker_calls for r in results) / n if n else 0.0,
        "unreachable_requeries_per_episode": sum(r.unreachable_requeries for r in results) / n if n else 0.0,
        "queries_per_episode": queries_by_reason(results),
        "errored": sum(r.error is not None for r in results),
        "refused": sum(r.error is not None and r.error.startswith("refused: ") for r in results),
    }


QUERY_REASONS = ("start", "reached", "unreachable", "budget")


def queries_by_reason(results: Sequence[EpisodeResult]) -> dict[str, float] | None:
    """Mean subgoal queries per episode by what triggered them (from the episodes' traces), or ``None``
    without traces (bot, flat). ``reached`` counts the subgoals the agent got to before the last one."""
    traced = [r.extra["trace"] for r in results if "trace" in r.extra]
    if not traced:
        return None
    return {why: sum(reason == why for t in traced for _, reason in t["queries"]) / len(traced) for why in QUERY_REASONS}


def markdown_table(summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Render ``{level: {mode: summary}}`` as a markdown table."""
    lines = [
        "| level | mode | success | 95% CI | mean length (successes) | expert length | plan ms/step "
        "| thinker share | thinker calls/ep | subgoals reached / unreachable per ep | errored |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for level, modes in summary.items():
        for mode, s in modes.items():
            fmt = lambda v, spec: "–" if v is None else format(v, spec)  # noqa: E731
            lines.append(
                f"| {level} | {mode} | {s['successes']}/{s['episodes']} ({100 * s['success_rate']:.0f}%) "
                f"| {100 * s['ci95'][0]:.0f}–{100 * s['ci95'][1]:.0f}% | {fmt(s['mean_length'], '.1f')}{_ratio(s)} "
                f"| {fmt(s['mean_expert_length'], '.1f')} | {fmt(s['planning_ms_per_step'], '.0f')} "
                f"| {100 * s['thinker_share']:.0f}% | {s['thinker_calls_per_episode']:.1f} | {_reached(s)} "
                f"| {s['errored']}{f' ({refused} refused)' if (refused := s.get('refused', 0)) else ''} |"
            )
    return "\n".join(lines)


def _ratio(s: dict[str, Any]) -> str:
    ratio = s.get("length_vs_expert")
    return "" if ratio is None else f" ({ratio:.2f}x the bot)"


def _reached(s: dict[str, Any]) -> str:
    q = s.get("queries_per_episode")
    return "–" if not q else f"{q['reached']:.1f} / {q['unreachable']:.1f}"


def to_json(results: Sequence[EpisodeResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]


def from_json(rows: Sequence[dict[str, Any]]) -> list[EpisodeResult]:
    """The inverse of :func:`to_json`."""
    return [EpisodeResult(**row) for row in rows]
