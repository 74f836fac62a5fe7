"""The pyramid latent head."""

from __future__ import annotations

import pytest
import torch

from thinkjepa.thinker.head import PyramidLatentHead


def _states(b: int = 3, s: int = 7, h: int = 16, n: int = 3) -> list[torch.Tensor]:
    return [torch.randn(b, s, h) for _ in range(n)]


@pytest.mark.parametrize("pooling", ["mean", "attention", "last"])
@pytest.mark.parametrize("residual", [True, False])
def test_output_has_the_world_model_latent_dim(pooling: str, residual: bool) -> None:
    head = PyramidLatentHead([-1, 0], hidden_size=16, latent_dim=12, pooling=pooling, residual=residual)
    z_t = torch.randn(3, 12) if residual else None
    assert head(_states(), torch.ones(3, 7), z_t).shape == (3, 12)


def test_untrained_residual_head_copies_the_current_latent() -> None:
    head = PyramidLatentHead([-1], hidden_size=16, latent_dim=12)
    z_t = torch.randn(3, 12)
    assert torch.equal(head(_states(), torch.ones(3, 7), z_t), z_t)
    with pytest.raises(ValueError, match="z_current"):
        head(_states(), torch.ones(3, 7))
    with pytest.raises(ValueError, match=r"shape \(3, 5\), expected \(3, 12\)"):
        head(_states(), torch.ones(3, 7), torch.randn(3, 5))


@pytest.mark.parametrize("pooling", ["mean", "attention", "last"])
def test_padding_tokens_are_ignored(pooling: str) -> None:
    head = PyramidLatentHead([-1, 1], hidden_size=16, latent_dim=12, pooling=pooling, residual=False)
    torch.nn.init.normal_(head.pools[0].query) if head.pools is not None else None
    states, mask = _states(), torch.ones(3, 7)
    mask[:, 5:] = 0
    padded = [s.clone() for s in states]
    for s in padded:
        s[:, 5:] = 1e3
    torch.testing.assert_close(head(states, mask), head(padded, mask))


def test_bad_layers_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one layer"):
        PyramidLatentHead([], hidden_size=16, latent_dim=12)
    head = PyramidLatentHead([5], hidden_size=16, latent_dim=12, residual=False)
    with pytest.raises(ValueError, match=r"\[5\] out of range for 3"):
        head(_states(), torch.ones(3, 7))


def test_last_pooling_reads_the_last_valid_token_on_either_padding_side() -> None:
    head = PyramidLatentHead([-1], hidden_size=16, latent_dim=12, pooling="last", residual=False)
    states = _states(b=2, n=1)
    right = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1] * 7])
    left = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7])
    shifted = states[0].clone()
    shifted[0, 2:] = states[0][0, :5]  # the same 5 valid tokens, left-padded
    torch.testing.assert_close(head([states[0]], right), head([shifted], left))


def test_grounded_pool_starts_as_the_mean_over_image_tokens_and_needs_the_image_mask() -> None:
    head = PyramidLatentHead([-1], hidden_size=16, latent_dim=12, pooling="grounded", residual=False)
    h = torch.randn(2, 7, 16)
    attention = torch.ones(2, 7, dtype=torch.long)
    image = torch.zeros(2, 7, dtype=torch.bool)
    image[:, 2:6] = True
    scores = head.grounding_scores([h], image)[:, 0]
    assert torch.isinf(scores[~image]).all() and torch.isfinite(scores[image]).all()
    mean_image = PyramidLatentHead([-1], hidden_size=16, latent_dim=12, pooling="mean", residual=False)
    mean_image.load_state_dict({k: v for k, v in head.state_dict().items() if not k.startswith("scorer")})
    torch.testing.assert_close(head([h], attention, image_mask=image), mean_image([h], image.long()))
    with pytest.raises(ValueError, match="needs image_mask"):
        head([h], attention)
    with pytest.raises(ValueError, match="pooling='grounded'"):
        mean_image.grounding_scores([h], image)


def test_each_grounded_query_pools_its_own_tokens() -> None:
    head = PyramidLatentHead([-1], hidden_size=16, latent_dim=12, pooling="grounded", residual=False, queries=2)
    h = torch.randn(1, 7, 16)
    attention = torch.ones(1, 7, dtype=torch.long)
    image = torch.zeros(1, 7, dtype=torch.bool)
    image[:, 2:6] = True
    assert head.grounding_scores([h], image).shape == (1, 2, 7)
    normed = head.norms[0](h)[0].detach()
    with torch.no_grad():  # query 0 looks at token 2, query 1 at token 5 (sharp softmax)
        head.scorer.weight.copy_(50.0 * normed[[2, 5]])
    head.mlp = torch.nn.Identity()  # expose the pooled features: (query 0, query 1) of the one layer
    features = head([h], attention, image_mask=image)[0]
    torch.testing.assert_close(features[:16], normed[2], atol=1e-3, rtol=0)
    torch.testing.assert_close(features[16:], normed[5], atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="queries=2"):
        PyramidLatentHead([-1], hidden_size=16, latent_dim=12, pooling="mean", queries=2)
