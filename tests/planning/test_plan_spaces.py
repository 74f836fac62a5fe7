"""Action spaces validate themselves and the plans checked against them."""

from __future__ import annotations

import pytest
import torch

from thinkjepa.planning import BoxSpace, DiscreteSpace


def test_discrete_space_subset() -> None:
    space = DiscreteSpace(7, allowed=(5, 0, 2, 1))
    assert space.allowed_ids == (0, 1, 2, 5) and space.num_allowed == 4
    uniform = space.uniform()
    assert torch.allclose(uniform, torch.tensor([0.25, 0.25, 0.25, 0, 0, 0.25, 0]))
    assert DiscreteSpace(3).allowed_ids == (0, 1, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "positive int"),
        ({"n": 7, "allowed": (0, 7)}, r"ids \[7\] outside \[0, 7\)"),
        ({"n": 7, "allowed": (1, 1)}, "duplicate"),
        ({"n": 7, "allowed": ()}, "empty"),
    ],
)
def test_discrete_space_rejects(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DiscreteSpace(**kwargs)


def test_box_space_bounds() -> None:
    space = BoxSpace(low=(-1.0, 0.0), high=2.0, dim=2)
    low, high = space.bounds()
    assert torch.equal(low, torch.tensor([-1.0, 0.0])) and torch.equal(high, torch.tensor([2.0, 2.0]))
    center, half = space.center_and_half_width()
    assert torch.equal(center, torch.tensor([0.5, 1.0])) and torch.equal(half, torch.tensor([1.5, 1.0]))
    assert space == BoxSpace((-1.0, 0.0), (2.0, 2.0), 2)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((1.0, 1.0, 2), "low < high"),
        (((0.0,), 1.0, 2), "low has 1 entries, expected dim=2"),
        ((float("-inf"), 1.0, 1), "must be finite"),
        ((0.0, 1.0, 0), "positive int"),
    ],
)
def test_box_space_rejects(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BoxSpace(*args)
