"""Shared test setup: one torch thread (small models on 2 shared cores get much slower with more)."""

import torch

torch.set_num_threads(1)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def babyai_dataset(tmp_path_factory):
    """A tiny real BabyAI bot dataset (88 px frames) shared by the training tests."""
    from thinkjepa.data.collect import collect

    root = tmp_path_factory.mktemp("data") / "babyai"
    return collect(
        ["BabyAI-GoToLocal-v0", "BabyAI-GoTo-v0"], episodes_per_level=4, out=str(root), image_size=88,
        epsilon=0.2, seed=0,
    )
