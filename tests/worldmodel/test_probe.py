"""The pose probe: renders every agent state, and its read-out tells informative latents from noise."""

import json

import numpy as np
import pytest
import torch

from thinkjepa.data.poses import UNREACHABLE, pose_frames
from thinkjepa.data.waypoints import FREE, cell_kinds
from thinkjepa.envs.babyai import make_env
from thinkjepa.worldmodel.encoder import EncoderConfig
from thinkjepa.worldmodel.export import save_world_model
from thinkjepa.worldmodel.jepa import JEPA
from thinkjepa.worldmodel.predictor import PredictorConfig
from thinkjepa.worldmodel.probe import fit_pose_probe, probe, probe_pose_encoder

LEVEL = "BabyAI-GoToLocal-v0"


def test_pose_frames_cover_every_free_state_of_each_layout():
    data = pose_frames(LEVEL, [11, 12], image_size=32)
    env = make_env(LEVEL, image_size=32)
    for i, seed in enumerate([11, 12]):
        env.reset(seed=seed)
        free = int((cell_kinds(env.unwrapped.grid) == FREE).sum())
        mine = data.poses[data.layout == i]
        assert len(mine) == 4 * free
        assert len({tuple(p) for p in mine}) == len(mine)  # no state twice
    assert data.frames.shape == (len(data.poses), 32, 32, 3) and data.frames.dtype == np.uint8
    assert data.grid == (8, 8)
    # the four headings of one cell are four different pictures
    assert len({data.frames[k].tobytes() for k in range(4)}) == 4


def test_step_distances_follow_the_movement_rules():
    data = pose_frames(LEVEL, [11], image_size=32, with_distances=True)
    dist, poses, nxt = data.distances[0], data.poses, data.next_state
    index = {tuple(p): i for i, p in enumerate(poses)}
    x, y, _ = poses[0]
    assert dist[index[(x, y, 0)], index[(x, y, 2)]] == 2  # turning around is two turns
    assert dist[index[(x, y, 0)], index[(x, y, 3)]] == 1  # one left turn
    for a in range(len(poses)):  # left/right/forward reach their successor in one step (or stay)
        for b in nxt[a]:
            assert dist[a, b] <= 1
    assert (dist < UNREACHABLE).all()  # one room: every state reaches every other
    assert (np.diag(dist) == 0).all()
    # triangle inequality through every successor
    assert all(dist[a, c] <= 1 + dist[b, c] for a in range(0, len(poses), 7) for b in nxt[a] for c in range(len(poses)))


def test_pose_frames_need_seeds():
    with pytest.raises(ValueError, match="at least one seed"):
        pose_frames(LEVEL, [], image_size=32)


def _synthetic(layouts: int = 60):
    data = pose_frames(LEVEL, list(range(100, 100 + layouts)), image_size=32)
    rng = np.random.default_rng(0)
    informative = np.concatenate(
        [np.eye(8)[data.poses[:, 0]], np.eye(8)[data.poses[:, 1]], np.eye(4)[data.poses[:, 2]]], axis=1
    ) + 0.05 * rng.standard_normal((len(data.poses), 20))
    noise = rng.standard_normal((len(data.poses), 20))
    return data, informative.astype(np.float32), noise.astype(np.float32), data.layout < layouts - 10


def test_read_out_recovers_pose_from_informative_latents_and_not_from_noise():
    data, informative, noise, train = _synthetic()
    truth = data.poses[~train]
    good = fit_pose_probe(informative, data, train, steps=300)(informative[~train])
    bad = fit_pose_probe(noise, data, train, steps=300)(noise[~train])
    assert (good == truth).all(1).mean() > 0.95
    assert (bad[:, 2] == truth[:, 2]).mean() < 0.4  # heading: chance is 25 %
    assert (bad[:, :2] == truth[:, :2]).all(1).mean() < 0.15


def test_probe_command_writes_its_result(tmp_path):
    torch.manual_seed(0)
    enc = EncoderConfig(image_size=32, patch_size=8, latent_dim=16, embed_dim=32, depth=1, num_heads=2)
    model = JEPA(enc, PredictorConfig(num_actions=7, action_embed_dim=8, hidden_dim=32, depth=1))
    save_world_model(model, tmp_path / "wm")
    out = tmp_path / "probe.json"
    result = probe(str(tmp_path / "wm"), LEVEL, train_layouts=3, val_layouts=2, steps=5, out=str(out))
    saved = json.loads(out.read_text())
    assert saved["val_layouts"] == 2 and saved["val_frames"] == result.val_frames > 0
    for key in ("x", "y", "heading", "cell", "pose", "chance_cell", "chance_heading"):
        assert 0.0 <= saved[key] <= 1.0
    assert result.pose <= result.cell <= min(result.x, result.y)


def test_probe_needs_held_out_layouts():
    with pytest.raises(ValueError, match="held-out layout"):
        probe_pose_encoder(lambda x: x.float().flatten(1), LEVEL, 16, train_layouts=3, val_layouts=0)


def test_multi_room_states_include_doorways_and_follow_the_real_environment():
    """GoTo: doorways are states, so the nine rooms connect; a forward into a closed door is a no-op for
    the environment and two actions (toggle, forward) for the distance — checked by stepping the level."""
    from minigrid.core.actions import Actions

    from thinkjepa.data.waypoints import CLOSED_DOOR

    seed = 7
    data = pose_frames("BabyAI-GoTo-v0", [seed], image_size=88, with_distances=True)
    dist, poses, nxt = data.distances[0], data.poses, data.next_state
    index = {tuple(p): i for i, p in enumerate(poses)}
    assert (dist < UNREACHABLE).all()  # every room reaches every other through the doorways
    env = make_env("BabyAI-GoTo-v0", image_size=88)
    env.reset(seed=seed)
    kinds = cell_kinds(env.unwrapped.grid)
    door = tuple(int(v) for v in np.argwhere(kinds == CLOSED_DOOR)[0])
    # the free cell beside the door, facing it
    before, heading = next(((door[0] - dx, door[1] - dy), d) for d, (dx, dy) in enumerate(((1, 0), (0, 1), (-1, 0), (0, -1)))
                           if kinds[door[0] - dx, door[1] - dy] == FREE)
    a, b = index[(*before, heading)], index[(*door, heading)]
    back = index[(*before, (heading + 2) % 4)]
    assert nxt[a, 2] == a and dist[a, b] == 2 and dist[b, back] == 3  # back out: turn twice, forward

    base = env.unwrapped
    base.agent_pos, base.agent_dir = np.array(before), heading
    frame, *_ = env.step(Actions.forward)
    assert tuple(base.agent_pos) == before  # the closed door stops the agent
    np.testing.assert_array_equal(frame, data.frames[a])
    env.step(Actions.toggle)
    frame, *_ = env.step(Actions.forward)
    assert tuple(base.agent_pos) == door
    np.testing.assert_array_equal(frame, data.frames[b])  # the doorway state is drawn with its door open
