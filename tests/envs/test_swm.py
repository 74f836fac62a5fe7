"""stable-worldmodel environments through this project's frames and episode store (needs the swm extra)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("stable_worldmodel", reason="the swm extra is not installed (make install-swm)")

from thinkjepa.data.episodes import EpisodeStore  # noqa: E402
from thinkjepa.envs.swm import collect_swm, frame, make_swm_env  # noqa: E402


def test_tworoom_expert_episodes_land_in_the_store_with_continuous_actions(tmp_path) -> None:
    out = collect_swm("swm/TwoRoom-v1", 2, tmp_path / "tworoom", steps=40, image_size=32, noise=0.3, seed=5)
    store = EpisodeStore(out)
    assert len(store) == 2 and store.image_size == 32 and store.action_space == "continuous"
    low, high = store.action_box
    assert low.tolist() == [-1.0, -1.0] and high.tolist() == [1.0, 1.0]
    assert [store.meta(i).num_steps for i in range(2)] == [40, 40] and store.meta(1).seed == 6
    frames = store.frames(0)
    assert frames.dtype == np.uint8 and frames.shape == (41, 32, 32, 3)
    assert any(not np.array_equal(frames[0], f) for f in frames[1:])  # the agent moves
    again = collect_swm("swm/TwoRoom-v1", 2, tmp_path / "again", steps=40, image_size=32, noise=0.3, seed=5)
    np.testing.assert_array_equal(EpisodeStore(again).actions(1), store.actions(1))  # seeded: the same episodes


def test_frames_are_square_uint8_at_the_asked_size_and_an_unknown_env_is_named() -> None:
    env = make_swm_env("swm/TwoRoom-v1")
    env.reset(seed=0)
    image = frame(env, 48)
    assert image.shape == (48, 48, 3) and image.dtype == np.uint8
    with pytest.raises(ValueError, match=r"unknown environment 'swm/TwoRooms-v1'; stable-worldmodel registers .*"
                                         r"'swm/TwoRoom-v1'"):
        make_swm_env("swm/TwoRooms-v1")
