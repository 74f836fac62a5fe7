"""Invariants of the JEPA world model at tiny sizes."""

from __future__ import annotations

import math

import pytest
import torch

from thinkjepa.checkpoint import StateDictMismatchError
from thinkjepa.worldmodel import (
    JEPA,
    EncoderConfig,
    ObjectiveConfig,
    PredictorConfig,
    SIGReg,
    VICReg,
    fingerprint,
    load_world_model,
    save_world_model,
)
from thinkjepa.worldmodel.ema import cosine_momentum, ema_update
from thinkjepa.worldmodel.metrics import ForecastRetrieval, effective_rank

ENC = EncoderConfig(image_size=32, patch_size=8, latent_dim=16, embed_dim=32, depth=1, num_heads=2)
PRED = PredictorConfig(num_actions=5, action_embed_dim=8, hidden_dim=32, depth=1)


def tiny(history: int = 1, reg=None) -> JEPA:
    torch.manual_seed(0)
    pred = PredictorConfig(**{**PRED.__dict__, "history": history})
    return JEPA(ENC, pred, reg or VICReg())


def batch(b: int = 4, t: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (b, t, 32, 32, 3), dtype=torch.uint8, generator=g)
    return frames, torch.randint(0, 5, (b, t - 1), generator=g)


def test_target_encoder_gets_no_gradient_and_context_does():
    model = tiny()
    out = model.loss(*batch(), ObjectiveConfig())
    out["loss"].backward()
    assert all(p.grad is None for p in model.target_encoder.parameters())
    assert all(not p.requires_grad for p in model.target_encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())


def test_ema_update_is_a_lerp_and_momentum_schedule_rises():
    model = tiny()
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.target_encoder.parameters()]
    ema_update(model.target_encoder, model.encoder, momentum=0.9)
    for b, t, o in zip(before, model.target_encoder.parameters(), model.encoder.parameters()):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * o)
    assert cosine_momentum(0, 100, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(50, 100, 0.99) == pytest.approx(0.995)
    assert cosine_momentum(100, 100, 0.99) == pytest.approx(1.0)


@pytest.mark.parametrize("history", [1, 3])
def test_rollout_shapes_and_soft_actions_match_hard_ones(history):
    model = tiny(history)
    z0 = torch.randn(3, 16)
    actions = torch.randint(0, 5, (3, 6))
    hard = model.rollout(z0, actions)
    soft = model.rollout(z0, torch.nn.functional.one_hot(actions, 5).float())
    assert hard.shape == (3, 6, 16)
    torch.testing.assert_close(hard, soft)


def test_teacher_forced_prediction_uses_the_right_history():
    model = tiny(history=2)
    z = torch.arange(4.0).view(1, 4, 1).expand(1, 4, 16)
    windows = model.history_windows(z)  # (1, 4, 2, 16)
    assert windows[0, :, :, 0].tolist() == [[0, 0], [0, 1], [1, 2], [2, 3]]


def test_training_lowers_the_loss_on_a_fixed_batch():
    model = tiny()
    frames, actions = batch()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        out = model.loss(frames, actions, ObjectiveConfig(rollout_steps=2))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("reg", [VICReg(), SIGReg(num_slices=32)])
def test_regularizers_penalise_collapse(reg):
    torch.manual_seed(0)
    spread = torch.randn(256, 16)
    collapsed = 0.01 * torch.randn(256, 16) + 3.0
    assert reg(collapsed) > 5 * reg(spread)


def test_regularizer_gradient_pushes_collapsed_latents_apart():
    torch.manual_seed(0)
    z = (0.01 * torch.randn(64, 8)).requires_grad_()
    start = z.detach().std(dim=0).mean()
    opt = torch.optim.SGD([z], lr=20.0)
    for _ in range(20):
        opt.zero_grad()
        VICReg()(z).backward()
        opt.step()
    assert z.std(dim=0).mean() > 10 * start


def test_forecast_retrieval_metric():
    metric = ForecastRetrieval((1, 2))
    target = torch.randn(8, 2, 4)
    metric.update(target.clone(), target)
    out = metric.compute()
    assert out["top1@1"] == 1.0 and out["top1@2"] == 1.0 and out["latent_mse@1"] == 0.0
    assert out["chance"] == pytest.approx(1 / 8)
    metric.reset()
    metric.update(target.roll(1, dims=0), target)  # every prediction is another window's target
    assert metric.compute()["top1@1"] == 0.0
    with pytest.raises(ValueError, match="horizon 4"):
        ForecastRetrieval((4,)).update(target, target)


def test_effective_rank():
    assert effective_rank(torch.randn(500, 8)) > 7
    assert effective_rank(torch.randn(500, 1) @ torch.randn(1, 8)) < 1.5


def test_export_round_trip_and_fingerprint(tmp_path):
    model = tiny().eval()
    save_world_model(model, tmp_path / "wm")
    loaded = load_world_model(tmp_path / "wm")
    assert fingerprint(loaded) == fingerprint(model)
    images = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    torch.testing.assert_close(loaded.encode(images), model.encode(images))
    torch.testing.assert_close(loaded.target_encode(images), model.target_encode(images))


def test_an_export_stores_one_copy_of_encoders_that_are_the_same_weights(tmp_path):
    import json

    from safetensors.torch import load_file

    same = tiny().eval()
    same.encoder.load_state_dict(same.target_encoder.state_dict())
    save_world_model(same, tmp_path / "same")
    stored = load_file(str(tmp_path / "same" / "model.safetensors"))
    assert json.loads((tmp_path / "same" / "config.json").read_text())["shared_encoders"] is True
    assert not any(k.startswith("encoder.") for k in stored) and any(k.startswith("target_encoder.") for k in stored)
    loaded = load_world_model(tmp_path / "same")
    assert fingerprint(loaded) == fingerprint(same)  # the same model as an export with both copies
    images = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    torch.testing.assert_close(loaded.encode(images), same.encode(images), rtol=0, atol=0)

    different = tiny().eval()
    with torch.no_grad():
        next(different.encoder.parameters()).add_(1.0)
    save_world_model(different, tmp_path / "different")
    assert "shared_encoders" not in json.loads((tmp_path / "different" / "config.json").read_text())
    assert any(k.startswith("encoder.") for k in load_file(str(tmp_path / "different" / "model.safetensors")))
    assert fingerprint(load_world_model(tmp_path / "different")) == fingerprint(different)


def test_loading_weights_of_another_architecture_names_keys_and_shapes(tmp_path):
    model = tiny()
    with torch.no_grad():
        next(model.encoder.parameters()).add_(1.0)  # two encoders stored
    save_world_model(model, tmp_path / "wm")
    other = JEPA(EncoderConfig(**{**ENC.__dict__, "latent_dim": 24}), PRED)
    from safetensors.torch import load_file

    state = load_file(str(tmp_path / "wm" / "model.safetensors"))
    with pytest.raises(StateDictMismatchError, match=r"shape mismatch at encoder\.proj\.weight: checkpoint \(16, \d+\) vs model \(24, \d+\)"):
        from thinkjepa.checkpoint import load_state_dict_strict

        load_state_dict_strict(other, state, "wm/model.safetensors")


def test_wrong_image_size_is_named():
    model = tiny()
    with pytest.raises(ValueError, match=r"image size \(48, 48\) does not match the encoder's image_size=32"):
        model.encode(torch.zeros(1, 48, 48, 3, dtype=torch.uint8))


def test_unknown_timm_model_is_named():
    with pytest.raises(ValueError, match="vit_nonexistent"):
        JEPA(EncoderConfig(model_name="vit_nonexistent"), PRED)


@pytest.mark.parametrize("history", [1, 2])
def test_prefix_shared_rollout_equals_the_plain_one(history):
    model = tiny(history)
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(3, 16, generator=g).repeat_interleave(50, dim=0)  # 3 episodes × 50 candidates
    actions = torch.randint(0, 3, (150, 4), generator=g)
    with torch.no_grad():
        shared = model.rollout(z0, actions, share_prefixes=True)
        plain = model.rollout(z0, actions, share_prefixes=False)
    torch.testing.assert_close(shared, plain, rtol=1e-5, atol=1e-5)


def test_init_from_copies_encoders_and_predictor_and_refuses_another_architecture(tmp_path):
    from dataclasses import asdict

    from thinkjepa.train.worldmodel import WorldModelModule

    source = tiny()
    with torch.no_grad():  # an EMA target that differs from the context encoder, as after training
        for p in source.target_encoder.parameters():
            p.add_(0.5)
    save_world_model(source, tmp_path / "wm")
    torch.manual_seed(123)
    module = WorldModelModule(encoder=asdict(ENC), predictor=asdict(PRED), init_from=str(tmp_path / "wm"))
    assert fingerprint(module.model) == fingerprint(source)
    assert module.model.inverse_dynamics is not None  # training-only head: fresh, not dropped
    assert module.hparams["init_from"] == str(tmp_path / "wm")

    with pytest.raises(ValueError, match=r"encoder\.embed_dim: 32 there, 48 here"):
        WorldModelModule(encoder={**asdict(ENC), "embed_dim": 48, "num_heads": 2}, predictor=asdict(PRED),
                         init_from=str(tmp_path / "wm"))
    with pytest.raises(FileNotFoundError, match="no world-model checkpoint"):
        WorldModelModule(encoder=asdict(ENC), predictor=asdict(PRED), init_from=str(tmp_path / "missing"))


class _AddAction(torch.nn.Module):
    """A predictor with a known answer: the last latent with the action id added to its first coordinate."""

    history = 1

    def __init__(self) -> None:
        super().__init__()
        self.config = PredictorConfig(num_actions=3, history=1)

    def forward(self, hist: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        out = hist[:, -1].clone()
        out[:, 0] = out[:, 0] + actions.float()
        return out


class _Const(torch.nn.Module):
    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value.expand(*x.shape[:-1], *self.value.shape) if self.value.ndim else self.value


def test_loss_is_assembled_from_t_plus_one_targets_rollout_regularizer_and_inverse_dynamics():
    """A known answer: frames whose pixel value v encode to z = (v, 0) and z̄ = (v, 1); the predictor adds the
    action to the first coordinate. Frames 0, 2, 3 and actions 1, 2:
    teacher  ẑ1 = (1, 0) vs z̄1 = (2, 1), ẑ2 = z2 + 2 = (4, 0) vs z̄2 = (3, 1): (1 + 1 + 1 + 1) / 4 = 1.0;
    rollout  (1, 0) vs (2, 1), then (1, 0) + 2 = (3, 0) vs (3, 1): (1 + 1 + 0 + 1) / 4 = 0.75 — predicted from
    the rollout's own previous prediction, not from z2;
    inverse dynamics: uniform logits over 3 actions, cross-entropy log 3, accuracy 0 (argmax 0, actions 1, 2)."""
    model = tiny()
    model.predictor = _AddAction()
    model.regularizer = _Const(torch.tensor(0.25))
    model.inverse_dynamics = _Const(torch.zeros(3))

    def pixel(images: torch.Tensor, second: float) -> torch.Tensor:
        v = images[:, 0, 0, 0].float()
        return torch.stack([v, torch.full_like(v, second)], dim=-1)

    model.encode = lambda images: pixel(images, 0.0)
    model.target_encode = lambda images: pixel(images, 1.0)
    frames = torch.stack([torch.full((32, 32, 3), v, dtype=torch.uint8) for v in (0, 2, 3)])[None]
    actions = torch.tensor([[1, 2]])
    objective = ObjectiveConfig(rollout_steps=2, rollout_weight=2.0, reg_weight=4.0, idm_weight=0.5)
    out = model.loss(frames, actions, objective)
    assert out["teacher"].item() == pytest.approx(1.0)
    assert out["rollout"].item() == pytest.approx(0.75)
    assert out["idm"].item() == pytest.approx(math.log(3)) and out["idm_acc"].item() == 0.0
    assert out["loss"].item() == pytest.approx(1.0 + 2.0 * 0.75 + 4.0 * 0.25 + 0.5 * math.log(3))
    one_step = model.loss(frames, actions, ObjectiveConfig(rollout_steps=1, rollout_weight=2.0, reg_weight=4.0,
                                                           idm_weight=0.0))
    assert one_step["rollout"].item() == pytest.approx(1.0)  # only (1, 0) vs (2, 1): 2 / 2
    assert "idm" not in one_step
    assert one_step["loss"].item() == pytest.approx(1.0 + 2.0 * 1.0 + 4.0 * 0.25)


def test_a_fresh_guided_predictor_is_exactly_the_unguided_one_and_its_gates_learn():
    from thinkjepa.worldmodel.predictor import MLPPredictor

    torch.manual_seed(0)
    plain = MLPPredictor(PRED, 16)
    torch.nn.init.normal_(plain.out[1].weight, std=0.1)  # not the identity, so the comparison means something
    guided = MLPPredictor(PredictorConfig(**{**PRED.__dict__, "guidance_dim": 6}), 16)
    missing, unexpected = guided.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("guidance.") for k in missing)
    z, a, c = torch.randn(4, 1, 16), torch.tensor([0, 1, 2, 3]), torch.randn(4, 6)
    assert torch.equal(guided(z, a, c), plain(z, a)) and torch.equal(guided(z, a), plain(z, a))
    loss = (guided(z, a, c) - torch.randn(4, 16)).pow(2).mean()
    loss.backward()
    assert all(film.gate.grad is not None and film.gate.grad.abs() > 0 for film in guided.guidance)
    with pytest.raises(ValueError, match=r"guidance must be \(B, 6\) = \(4, 6\), got \(4, 5\)"):
        guided(z, a, torch.randn(4, 5))
    with pytest.raises(ValueError, match="takes no guidance"):
        plain(z, a, c)
    forecast = guided(z, None, c)  # no action: a forecast from the history (and the guidance) alone
    assert forecast.shape == (4, 16) and torch.isfinite(forecast).all()


def test_a_field_added_later_leaves_unguided_exports_and_fingerprints_as_they_were(tmp_path):
    import json

    plain = tiny()
    save_world_model(plain, tmp_path / "plain")
    config = json.loads((tmp_path / "plain" / "config.json").read_text())
    assert "guidance_dim" not in config["predictor"]  # as exports written before the field existed
    assert fingerprint(load_world_model(tmp_path / "plain")) == config["fingerprint"] == fingerprint(plain)
    torch.manual_seed(0)
    guided = JEPA(ENC, PredictorConfig(**{**PRED.__dict__, "guidance_dim": 4}), VICReg())
    save_world_model(guided, tmp_path / "guided")
    assert json.loads((tmp_path / "guided" / "config.json").read_text())["predictor"]["guidance_dim"] == 4
    assert load_world_model(tmp_path / "guided").predictor.guidance is not None


def test_guided_rollouts_and_action_free_forecasts():
    torch.manual_seed(0)
    model = JEPA(ENC, PredictorConfig(**{**PRED.__dict__, "guidance_dim": 3}), VICReg())
    torch.nn.init.normal_(model.predictor.out[1].weight, std=0.1)
    z0, actions, c = torch.randn(2, 16), torch.tensor([[1, 2, 3], [0, 4, 1]]), torch.randn(2, 3)
    with torch.no_grad():
        torch.testing.assert_close(model.rollout(z0, actions, guidance=c), model.rollout(z0, actions), rtol=0, atol=0)
        for film in model.predictor.guidance:
            film.gate.fill_(1.0)  # open the gates: now the guidance changes the forecast
        assert not torch.allclose(model.rollout(z0, actions, guidance=c), model.rollout(z0, actions))
        forecast = model.forecast(z0, 4, guidance=c)
    assert forecast.shape == (2, 4, 16)
    with torch.no_grad():
        step1 = model.predictor(z0[:, None], None, c)
    torch.testing.assert_close(forecast[:, 0], step1)
