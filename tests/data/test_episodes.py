"""The on-disk episode format: round trip, atomic writes, and errors that name the bad file."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from thinkjepa.data.episodes import EpisodeFileError, EpisodeStore
from thinkjepa.data.records import EpisodeRecord, SubgoalSegment, WaypointSegment
from thinkjepa.data.writer import EpisodeWriter

SIZE = 8


def record(num_steps: int, seed: int) -> EpisodeRecord:
    """A synthetic episode whose frame ``t`` is filled with ``seed * 16 + t`` (so frames are traceable)."""
    frames = (np.arange(num_steps + 1, dtype=np.uint8) + seed * 16)[:, None, None, None]
    frames = np.broadcast_to(frames, (num_steps + 1, SIZE, SIZE, 3)).copy()  # (T+1, H, W, 3)
    half = num_steps // 2
    ends = np.array([half] * half + [num_steps] * (num_steps + 1 - half), dtype=np.int32)
    return EpisodeRecord(
        level="Synthetic-v0",
        seed=seed,
        mission=f"go to thing {seed}",
        success=True,
        tile_size=1,
        frames=frames,
        actions=np.arange(num_steps) % 3,
        expert=np.arange(num_steps) % 2 == 0,
        bot_subgoal_end=ends,
        waypoint_index=(np.arange(num_steps + 1) >= half).astype(np.int32),
        waypoint_frames=np.full((2, SIZE, SIZE, 3), 200 + seed, dtype=np.uint8),
        subgoals=[
            SubgoalSegment(0, half, "GoNextToSubgoal", "cell (1, 1)"),
            SubgoalSegment(half, num_steps, "GoNextToSubgoal", "red ball"),
        ],
        waypoints=[WaypointSegment(0, half, 0, (1, 1, 0)), WaypointSegment(half, num_steps, 1, (2, 1, 3))],
    )


def write(root: Path, lengths: tuple[int, ...] = (4, 6, 5)) -> Path:
    with EpisodeWriter(root) as writer:
        for seed, num_steps in enumerate(lengths):
            writer.add(record(num_steps, seed))
    return root


def test_round_trip(tmp_path: Path) -> None:
    store = EpisodeStore(write(tmp_path / "ds"))
    assert len(store) == 3 and store.image_size == SIZE and store.num_actions == 7
    for i, num_steps in enumerate((4, 6, 5)):
        m, r = store.meta(i), record(num_steps, i)
        assert (m.num_steps, m.seed, m.mission, m.num_waypoint_frames) == (num_steps, i, r.mission, 2)
        assert np.array_equal(store.frames(i), r.frames)
        assert np.array_equal(store.actions(i), r.actions) and store.actions(i).dtype == np.int64
        assert np.array_equal(store.expert(i), r.expert)
        assert m.subgoals == tuple(r.subgoals)
        assert [w.index for w in m.waypoints] == [m.waypoint_start, m.waypoint_start + 1]  # made global
        assert np.array_equal(store.subgoal_frame(i, 0, "bot"), r.frames[num_steps // 2])
        assert np.array_equal(store.subgoal_frame(i, num_steps, "bot"), r.frames[-1])
        assert (store.subgoal_frame(i, num_steps, "waypoint") == 200 + i).all()
    assert np.load(tmp_path / "ds" / "actions.npy")[[4, 11, 17]].tolist() == [-1, -1, -1]
    header = json.loads((tmp_path / "ds" / "episodes.json").read_text())
    assert header["tile_sizes"] == {"Synthetic-v0": 1} and header["action_names"][2] == "forward"
    with pytest.raises(ValueError, match="source"):
        store.subgoal_frame(0, 0, "oracle")  # type: ignore[arg-type]
    with pytest.raises(IndexError):
        store.subgoal_frame(0, 5)


def test_store_pickles_by_path(tmp_path: Path) -> None:
    store = EpisodeStore(write(tmp_path / "ds"))
    blob = pickle.dumps(store)
    assert len(blob) < 1000  # DataLoader workers re-map the files instead of copying them
    assert np.array_equal(pickle.loads(blob).frames(1), store.frames(1))


def test_whole_dataset_views_and_frame_chunks(tmp_path: Path) -> None:
    store = EpisodeStore(write(tmp_path / "ds"))  # 5 + 7 + 6 frames
    assert store.num_frames == 18
    assert store.episode_spans().tolist() == [[0, 5], [5, 7], [12, 6]]
    actions = store.per_frame("actions")
    assert isinstance(actions, np.memmap)
    assert actions.tolist() == np.load(tmp_path / "ds" / "actions.npy").tolist()
    with pytest.raises(KeyError, match="no per-frame array 'waypoint_frames'"):
        store.per_frame("waypoint_frames")
    every = np.concatenate([store.frames(i) for i in range(len(store))])
    for rows in (1, 4, 18, 50):  # chunks are read from the file, in order, the last one short
        chunks = [c.copy() for c in store.frame_chunks(rows)]
        assert [len(c) for c in chunks[:-1]] == [rows] * (len(chunks) - 1) and 0 < len(chunks[-1]) <= rows
        assert np.array_equal(np.concatenate(chunks), every)
    with pytest.raises(ValueError, match="rows"):
        next(store.frame_chunks(0))


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


def test_failure_while_writing_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="crash"), EpisodeWriter(tmp_path / "ds") as writer:
        writer.add(record(4, 0))
        raise RuntimeError("crash")
    assert leftovers(tmp_path) == []
    bad = record(4, 1)
    bad.frames = bad.frames[:-1]
    with (
        pytest.raises(ValueError, match=r"frames has uint8 \(4, 8, 8, 3\)"),
        EpisodeWriter(tmp_path / "ds") as w,
    ):
        w.add(bad)
    assert leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="no episodes"), EpisodeWriter(tmp_path / "ds"):
        pass
    assert leftovers(tmp_path) == []


def test_overwrite_protection(tmp_path: Path) -> None:
    root = write(tmp_path / "ds")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        EpisodeWriter(root)
    with EpisodeWriter(root, overwrite=True) as writer:
        writer.add(record(3, 9))
    assert len(EpisodeStore(root)) == 1 and leftovers(tmp_path) == ["ds"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an episode dataset"):
        EpisodeWriter(tmp_path / "other", overwrite=True)


@pytest.mark.parametrize(
    "name",
    ["frames", "actions", "expert", "bot_subgoal_end", "waypoint_index", "waypoint_frames", "episodes"],
)
def test_missing_file_is_named(tmp_path: Path, name: str) -> None:
    root = write(tmp_path / "ds")
    path = root / (f"{name}.json" if name == "episodes" else f"{name}.npy")
    path.unlink()
    with pytest.raises(EpisodeFileError, match=path.name):
        EpisodeStore(root)


def test_truncated_file_is_named(tmp_path: Path) -> None:
    root = write(tmp_path / "ds")
    data = (root / "frames.npy").read_bytes()
    (root / "frames.npy").write_bytes(data[: len(data) - 100])
    with pytest.raises(EpisodeFileError, match="frames.npy"):
        EpisodeStore(root)


@pytest.mark.parametrize("name", ["waypoint_index.npy", "episodes.json"])
def test_corrupt_file_is_named(tmp_path: Path, name: str) -> None:
    root = write(tmp_path / "ds")
    (root / name).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(EpisodeFileError, match=name):
        EpisodeStore(root)


def test_inconsistent_length_is_named(tmp_path: Path) -> None:
    root = write(tmp_path / "ds")
    np.save(root / "expert.npy", np.zeros(7, dtype=bool))
    with pytest.raises(EpisodeFileError, match=r"expert.npy.*expected bool \(18,\)"):
        EpisodeStore(root)
    root = write(tmp_path / "ds2")
    actions = np.load(root / "actions.npy")
    actions[4] = 2  # an episode end that is not -1
    np.save(root / "actions.npy", actions)
    with pytest.raises(EpisodeFileError, match="actions.npy"):
        EpisodeStore(root)


def test_empty_dataset(tmp_path: Path) -> None:
    root = write(tmp_path / "ds")
    header = json.loads((root / "episodes.json").read_text())
    (root / "episodes.json").write_text(json.dumps({**header, "episodes": []}))
    with pytest.raises(EpisodeFileError, match="no episodes"):
        EpisodeStore(root)
