"""Environments: BabyAI levels observed as full top-down RGB renders."""

from thinkjepa.envs.babyai import (
    ACTION_NAMES,
    MIN_TILE_SIZE,
    NAV_ACTIONS,
    NUM_ACTIONS,
    FullGridObservation,
    is_success,
    make_env,
    render_full_grid,
    tile_size_for,
)

__all__ = [
    "ACTION_NAMES",
    "MIN_TILE_SIZE",
    "NAV_ACTIONS",
    "NUM_ACTIONS",
    "FullGridObservation",
    "is_success",
    "make_env",
    "render_full_grid",
    "tile_size_for",
]
