"""Reset seeds kept for evaluation, and the check every training-data source runs against them.

A released agent is scored on episodes whose layouts no part of it has seen: no collected episode, no
grounding sample, no distance-head or probe layout, no validation split and no chosen setting may come
from these seeds. Every sampler that turns reset seeds into training data calls :func:`check_training_seeds`
and refuses an overlap, naming both ranges, before any compute.

Seeds in use elsewhere (BabyAI): collectors 0+, 100,000+, 200,000+, 7,000,000+ (GoTo), 8,000,000+ (the
forecasting benchmark); grounding 0+, 1,000,000+ (router), 10,000,000+ (validation), 50,000,000+,
60,000,000+, 80,000,000+ (thinkers); distance heads 3,000,000–3,001,499; pose probe 5,000,000+;
thinker pose evaluation 70,000,000+; reach-threshold calibration 9,000,000+; development evaluations
1,000,000+ (settings are chosen there).
"""

from __future__ import annotations

BABYAI_EVAL_SEEDS = range(4_000_000, 5_000_000)
"""BabyAI reset seeds for reporting released agents (``thinkjepa release evaluate``, ``make eval-release``)."""

SWM_EVAL_SEEDS = range(0, 100_000)
"""stable-worldmodel reset seeds for the goal-reaching protocol (it starts at seed 42; the long-horizon variant
walks on from there until enough episodes qualify)."""


def check_training_seeds(first: int, count: int, what: str, reserved: range = BABYAI_EVAL_SEEDS) -> None:
    """Refuse training data drawn from reset seeds ``first .. first + count - 1`` when they meet ``reserved``.

    Raises:
        ValueError: naming ``what``, its seeds and the reserved range.
    """
    last = first + count - 1
    if count > 0 and first < reserved.stop and reserved.start <= last:
        raise ValueError(
            f"{what} would use reset seeds {first:,}..{last:,}, which overlap the seeds {reserved.start:,}.."
            f"{reserved.stop - 1:,} kept for evaluation (thinkjepa.envs.seeds); start it elsewhere")
