"""The evaluation seeds stay out of every training-data source."""

import inspect

import pytest

from thinkjepa.data.collect import collect
from thinkjepa.data.grounding import grounding_samples
from thinkjepa.envs.seeds import BABYAI_EVAL_SEEDS, SWM_EVAL_SEEDS, check_training_seeds
from thinkjepa.policy.release_eval import evaluate_release
from thinkjepa.policy.swm_protocol import GoalProtocol
from thinkjepa.train.distance import PoseDistanceDataModule


def test_the_check_refuses_exactly_the_overlapping_ranges():
    start, stop = BABYAI_EVAL_SEEDS.start, BABYAI_EVAL_SEEDS.stop
    check_training_seeds(start - 10, 10, "before")  # ends one seed short of the range
    check_training_seeds(stop, 1_000, "after")
    check_training_seeds(start, 0, "nothing")
    for first, count in [(start - 10, 11), (stop - 1, 5), (start - 1, 10_000_000), (start + 7, 1)]:
        with pytest.raises(ValueError, match=r"the seeds 4,000,000\.\.4,999,999 kept for evaluation") as err:
            check_training_seeds(first, count, "my collector")
        assert f"my collector would use reset seeds {first:,}.." in str(err.value)


def test_released_agents_are_reported_on_the_reserved_seeds():
    episodes = inspect.signature(evaluate_release).parameters["episodes"].default
    first = inspect.signature(evaluate_release).parameters["seed"].default
    assert range(first, first + episodes)[-1] in BABYAI_EVAL_SEEDS and first in BABYAI_EVAL_SEEDS
    assert GoalProtocol().seed in SWM_EVAL_SEEDS  # stable-worldmodel's protocol (seed 42)


def test_collectors_and_layout_samplers_refuse_evaluation_seeds(tmp_path):
    with pytest.raises(ValueError, match=r"collect\(BabyAI-GoTo-v0\) would use reset seeds 3,999,999\.\.4,000,000"):
        collect(["BabyAI-GoTo-v0"], 2, tmp_path / "data", seed=3_999_999)
    assert not (tmp_path / "data").exists()
    with pytest.raises(ValueError, match="grounding samples of BabyAI-GoToLocal-v0 would use"):
        grounding_samples("BabyAI-GoToLocal-v0", 4, seed=BABYAI_EVAL_SEEDS.start)
    with pytest.raises(ValueError, match="goal-distance layouts of BabyAI-GoTo-v0 would use reset seeds 3,999,990"):
        PoseDistanceDataModule("BabyAI-GoTo-v0", train_layouts=8, val_layouts=4, seed=3_999_990)
    PoseDistanceDataModule("BabyAI-GoTo-v0", train_layouts=140, val_layouts=20, seed=3_000_000)  # the release's
