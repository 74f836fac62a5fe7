"""Planning with a guided predictor: the thinker's VLM reads the frame and the instruction at each query, and its
vector guides every candidate rollout until the next one."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from thinkjepa.envs.babyai import NAV_ACTIONS, NUM_ACTIONS, make_env
from thinkjepa.planning.cem import CEMPlanner
from thinkjepa.planning.spaces import DiscreteSpace
from thinkjepa.policy import HierarchicalPolicy
from thinkjepa.policy.mpc import guided_rollout
from thinkjepa.thinker.guidance import VLMGuidance
from thinkjepa.thinker.vlm import TinyVLM
from thinkjepa.train.grounding import GroundingPretrainModule
from thinkjepa.worldmodel import JEPA, EncoderConfig, PredictorConfig
from thinkjepa.worldmodel.predictor import with_guidance

SPACE = DiscreteSpace(NUM_ACTIONS, allowed=tuple(int(a) for a in NAV_ACTIONS))


class CountingGuidance:
    """A VLM guidance that counts the frames it reads."""

    def __init__(self, guide: VLMGuidance) -> None:
        self.guide, self.dim, self.frames = guide, guide.dim, 0

    def __call__(self, images, missions):
        self.frames += len(images)
        return self.guide(images, missions)


class FarSubgoal:
    def reset(self, instructions, envs=None) -> None:
        pass

    def propose(self, rows, images):
        return torch.full((len(rows), 16), 3.0)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    torch.manual_seed(0)
    grounded = GroundingPretrainModule(vlm=TinyVLM(image_size=64, patch_size=8, merge=1))
    guide = VLMGuidance(grounded.export(tmp_path_factory.mktemp("vlm") / "vlm"))
    enc = EncoderConfig(image_size=64, patch_size=8, latent_dim=16, embed_dim=32, depth=1, num_heads=2)
    plain = JEPA(enc, PredictorConfig(hidden_dim=32, depth=2)).eval()
    torch.nn.init.normal_(plain.predictor.out[1].weight, std=0.1)  # not the identity map
    guided = copy.deepcopy(plain)
    guided.predictor = with_guidance(plain.predictor, guide.dim).eval()
    env = make_env("BabyAI-GoToLocal-v0", image_size=64)
    obs, _ = env.reset(seed=0)
    return guide, plain, guided, obs


def run(wm, guidance, obs, steps: int = 5):
    policy = HierarchicalPolicy(wm, FarSubgoal(), CEMPlanner(horizon=3, num_samples=16, iterations=2, num_elites=4),
                                SPACE, reach_threshold=1e-3, patience=100, requery_every=2, guidance=guidance)
    policy.reset(["go to the red ball", "go to the grey key"])
    actions = [policy.act(np.stack([obs, obs])) for _ in range(steps)]
    return np.stack(actions), [t.predicted_cost for t in policy.traces], policy


def test_closed_gates_plan_as_the_unguided_model_and_open_ones_change_the_plans(parts) -> None:
    guide, plain, guided, obs = parts
    unguided_actions, unguided_costs, _ = run(plain, None, obs)
    counting = CountingGuidance(guide)
    actions, costs, policy = run(guided, counting, obs)
    np.testing.assert_array_equal(actions, unguided_actions)
    # gates closed: the unguided planner (up to float rounding: unguided rollouts share action prefixes on a CPU)
    np.testing.assert_allclose(costs, unguided_costs, rtol=1e-5)
    assert counting.frames == 2 * 3  # read at each thinker query (steps 0, 2, 4), not every step
    assert policy.c.shape == (2, guide.dim) and not torch.equal(policy.c[0], policy.c[1])  # its instruction's

    opened = copy.deepcopy(guided)
    for film in opened.predictor.guidance:
        film.gate.data.fill_(1.0)
    _, open_costs, _ = run(opened, guide, obs)
    finite = np.isfinite(unguided_costs)
    assert np.abs(np.asarray(open_costs)[finite] - np.asarray(unguided_costs)[finite]).max() > 1e-3  # it guides

    z0 = torch.randn(6, 16)  # 2 episodes x 3 candidates, grouped by episode as the planners lay them out
    actions = torch.randint(NUM_ACTIONS, (6, 3))
    c = torch.randn(2, guide.dim)
    torch.testing.assert_close(guided_rollout(opened, c)(z0, actions),
                               opened.rollout(z0, actions, guidance=c.repeat_interleave(3, 0)))
    with pytest.raises(ValueError, match="7 candidate rollouts do not split into 2 episodes"):
        guided_rollout(opened, c)(torch.randn(7, 16), torch.randint(NUM_ACTIONS, (7, 3)))


def test_guidance_of_another_width_or_for_an_unguided_model_is_refused_naming_both(parts) -> None:
    guide, plain, guided, _ = parts
    planner = CEMPlanner(horizon=2, num_samples=4, iterations=1, num_elites=2)
    with pytest.raises(ValueError, match=rf"gives {guide.dim}-D vectors but the world model's predictor takes no guidance"):
        HierarchicalPolicy(plain, FarSubgoal(), planner, SPACE, guidance=guide)
    narrow = copy.deepcopy(plain)
    narrow.predictor = with_guidance(plain.predictor, 8)
    with pytest.raises(ValueError, match=rf"gives {guide.dim}-D vectors but the world model's predictor takes 8-D"):
        HierarchicalPolicy(narrow, FarSubgoal(), planner, SPACE, guidance=guide)
