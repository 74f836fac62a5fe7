"""Forecasting without actions: the guidance a grounded VLM gives, the forecasters, their scores."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from thinkjepa.data.collect import collect
from thinkjepa.data.episodes import EpisodeStore
from thinkjepa.data.grounding import grounding_samples
from thinkjepa.thinker.guidance import VLMGuidance
from thinkjepa.thinker.vlm import TinyVLM
from thinkjepa.train.grounding import GroundingPretrainModule, as_batch
from thinkjepa.worldmodel import JEPA, EncoderConfig, PredictorConfig
from thinkjepa.worldmodel.forecast import (
    ForecastSet,
    PredictorForecaster,
    VLMOnly,
    agent_poses,
    fit_forecaster,
    markdown_table,
    run_forecast_benchmark,
    score,
)
from thinkjepa.worldmodel.probe import fit_pose_probe

LEVEL = "BabyAI-GoToLocal-v0"


def tiny_world_model(image_size: int = 88, latent: int = 16) -> JEPA:
    torch.manual_seed(0)
    return JEPA(EncoderConfig(image_size=image_size, patch_size=11, latent_dim=latent, embed_dim=32, depth=1, num_heads=2),
                PredictorConfig(num_actions=7, action_embed_dim=8, hidden_dim=32, depth=2))


def test_guidance_pools_each_layer_where_the_grounding_readout_points(tmp_path) -> None:
    torch.manual_seed(0)
    grounded = GroundingPretrainModule(vlm=TinyVLM(image_size=88, patch_size=11, merge=1))
    with torch.no_grad():
        grounded.scorer.weight.normal_()  # a read-out that prefers some tokens
    guidance = VLMGuidance(grounded.export(tmp_path / "vlm"), layers=[1, -1])
    batch = as_batch(grounding_samples(LEVEL, 3, seed=5, image_size=88, naming="level"))
    images, missions = batch["image"], batch["mission"]
    scores, _ = grounded.eval().token_scores(images, missions)
    torch.testing.assert_close(guidance.attention(images, missions), torch.softmax(scores[:, 0], -1))
    c, w = guidance(images, missions), grounded.norm.normalized_shape[0]
    assert c.shape == (3, guidance.dim) and guidance.dim == 3 * w + 2 and not c.requires_grad
    assert not any(p.requires_grad for p in guidance.parameters())
    tokens, attention = guidance.read(images, missions)
    torch.testing.assert_close(c[:, w:2 * w], torch.einsum("bn,bnd->bd", attention, tokens[-1]))  # layer -1, pooled
    torch.testing.assert_close(c[:, 2 * w: 3 * w], tokens[-1].mean(1))  # its mean over the image
    torch.testing.assert_close(c[:, 3 * w:], VLMGuidance.pointer(attention))  # and where the attention points
    corner = torch.zeros(1, 64)
    corner[0, 7] = 1.0  # row 0, last column of an 8 x 8 grid: top right
    torch.testing.assert_close(VLMGuidance.pointer(corner), torch.tensor([[1.0, -1.0]]))
    other = guidance(images, ["go to the red ball"] * 3)
    assert (other - c).abs().max() > 1e-3  # the instruction changes what the VLM reads
    with pytest.raises(ValueError, match="hidden states"):
        VLMGuidance(tmp_path / "vlm", layers=[9])


def test_a_guided_forecaster_starts_as_the_unguided_one_and_learns_what_only_guidance_says() -> None:
    """Futures move each anchor's latent in one of four directions that only the guidance vector names: the
    unguided forecaster can only learn the average; the guided one learns the direction; the VLM-only read-out,
    which never sees z0, cannot place the start."""
    wm = tiny_world_model()
    jepa, guided = PredictorForecaster(wm), PredictorForecaster(wm, guidance_dim=4)
    g = torch.Generator().manual_seed(0)
    n, horizon = 512, 4
    z0 = torch.randn(n, 16, generator=g)
    which = torch.randint(4, (n,), generator=g)
    c = torch.nn.functional.one_hot(which, 4).float()
    direction = torch.zeros(4, 16)
    direction[torch.arange(4), torch.arange(4)] = 1.0
    future = z0[:, None] + 0.5 * torch.arange(1, horizon + 1)[None, :, None] * direction[which][:, None]
    data = ForecastSet(z0, future, c, np.zeros((n, horizon + 1, 2), np.int64), np.arange(n))
    torch.testing.assert_close(guided(z0[:8], c[:8], horizon), jepa(z0[:8], c[:8], horizon), rtol=0, atol=0)
    before = {k: v.clone() for k, v in wm.state_dict().items()}
    losses = {name: fit_forecaster(model, data, steps=300, lr=3e-3) for name, model in
              (("jepa", jepa), ("guided", guided), ("vlm", VLMOnly(4, 16, horizon, hidden=64)))}
    assert all(torch.equal(v, wm.state_dict()[k]) for k, v in before.items())  # the world model is untouched
    encoders = {k: v for k, v in wm.state_dict().items() if "encoder" in k}
    assert all(torch.equal(jepa.model.state_dict()[k], v) for k, v in encoders.items())  # only predictors train
    assert losses["guided"][-1] < 0.3 * losses["jepa"][-1], losses
    assert losses["guided"][-1] < 0.3 * losses["vlm"][-1], losses


class FirstCoordinate(torch.nn.Module):
    """A forecaster that reads the anchor's first latent coordinate only."""

    def __init__(self, dim: int, horizon: int) -> None:
        super().__init__()
        self.shape = (horizon, dim)
        self.net = torch.nn.Sequential(torch.nn.Linear(1, 64), torch.nn.GELU(), torch.nn.Linear(64, horizon * dim))

    def forward(self, z0: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
        return self.net(z0[:, :1]).view(-1, *self.shape)


def test_a_position_weight_teaches_a_forecaster_to_decode_to_the_cell_the_latent_error_cannot_say() -> None:
    """The future latents are noise (mean squared error can only learn their mean, zero), but the agent's cell is
    1 or 3 after the anchor's first latent coordinate's sign; the read-out decodes the cell from coordinate 1.
    Trained through the read-out, the forecaster learns to write the right cell there; without, it cannot."""
    g = torch.Generator().manual_seed(0)
    n, horizon, dim = 512, 2, 16
    cell = torch.randint(2, (1024,), generator=g) * 2 + 1  # 1 or 3
    truth = torch.randn(1024, dim, generator=g)
    truth[:, 1] = cell.float() - 2.0  # coordinate 1 says the cell: -1 or +1
    layout = SimpleNamespace(poses=np.stack([cell.numpy(), np.zeros(1024, np.int64), np.zeros(1024, np.int64)], 1),
                             grid=(5, 5))
    readout = fit_pose_probe(truth.numpy(), layout, np.ones(1024, bool), steps=300, hidden=32)
    assert (readout(truth.numpy())[:, 0] == cell.numpy()).mean() > 0.99
    z0 = torch.randn(n, dim, generator=g)
    cells = np.zeros((n, horizon + 1, 2), np.int64)
    cells[:, 1:, 0] = np.where(z0[:, 0].numpy() > 0, 3, 1)[:, None]
    data = ForecastSet(z0, torch.randn(n, horizon, dim, generator=g), torch.zeros(n, 1), cells, np.arange(n))
    right = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        model = FirstCoordinate(dim, horizon)
        fit_forecaster(model, data, steps=300, lr=3e-3, readout=readout, position_weight=weight)
        with torch.no_grad():
            decoded = readout(model(z0, data.guidance).reshape(-1, dim).numpy())[:, 0].reshape(n, horizon)
        right[weight] = float((decoded == cells[:, 1:, 0]).mean())
    assert right[1.0] > 0.95 and right[0.0] < 0.85, right  # without: what noise left in coordinate 1
    with pytest.raises(ValueError, match="needs a readout"):
        fit_forecaster(VLMOnly(1, dim, horizon), data, steps=1, position_weight=1.0)


def test_scores_are_displacements_in_cells_with_episode_bootstrap_intervals() -> None:
    n, horizon = 6, 2
    cells = np.zeros((n, horizon + 1, 2), np.int64)
    cells[:, 1:] = [0, 0]
    test = ForecastSet(torch.zeros(n, 3), torch.zeros(n, horizon, 3), torch.zeros(n, 1), cells, np.repeat([0, 1, 2], 2))

    def decode(latents: np.ndarray) -> np.ndarray:  # every latent decodes to cell (3, 4): 5 cells from the truth
        return np.tile([3, 4, 0], (len(latents), 1))

    table = score({"row": torch.ones(n, horizon, 3)}, test, decode, horizons=[1, 2])
    row = table["row"]
    assert row["ade"]["mean"] == pytest.approx(5.0) and row["fde"]["mean"] == pytest.approx(5.0)
    assert row["ade"]["ci95"] == pytest.approx((5.0, 5.0))
    assert row["latent@2"]["mean"] == pytest.approx(1.0)


def test_the_benchmark_replays_poses_and_scores_every_row(tmp_path) -> None:
    store = EpisodeStore(collect(["BabyAI-GoTo-v0"], 6, tmp_path / "goto", image_size=88, epsilon=0.2, seed=3))
    poses = agent_poses(store, 0)
    assert poses.shape == (store.meta(0).num_steps + 1, 3)
    assert np.abs(np.diff(poses[:, :2], axis=0)).sum(1).max() <= 1  # one cell at most per step
    wm = tiny_world_model()

    def guidance(images: np.ndarray, missions: list[str]) -> torch.Tensor:  # a stand-in: mission length, brightness
        return torch.tensor([[len(m) / 20.0, float(im.mean()) / 255.0] for im, m in zip(images, missions, strict=True)])

    result = run_forecast_benchmark(store, wm, guidance, 2, horizon=4, anchor_stride=4, held_out=0.34, steps=3,
                                    readout_steps=3, neutral="go to the object", log=lambda _: None)
    assert set(result["table"]) == {"copy", "jepa-zero", "jepa", "vlm", "guided", "guided-blind", "true"}
    assert result["test_episodes"] == 2 and result["train_episodes"] == 4 and result["horizons"] == [1, 2, 4]
    assert result["table"]["true"]["latent@4"]["mean"] == 0.0
    assert "| guided |" in markdown_table(result)

    frames = store.frames(1).copy()
    frames[-1] = 0
    store.frames = lambda i: frames  # a stored episode its replay cannot reproduce
    with pytest.raises(ValueError, match="replayed frames differ"):
        agent_poses(store, 1)
