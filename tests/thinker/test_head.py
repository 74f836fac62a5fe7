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


class _Raw(torch.nn.Module):
    """A scorer that passes the first ``n`` features through (so a test can write the logits directly)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h[..., : self.n]


def test_cell_scores_lay_the_cells_out_row_major_as_image_token_index_does() -> None:
    from thinkjepa.thinker.vlm import image_token_index

    k, t, q = 2, 3, 2  # 3 x 3 tokens of 2 x 2 cells: a 6 x 6 grid; two queries
    head = PyramidLatentHead([-1], hidden_size=16, latent_dim=12, pooling="grounded", residual=False,
                             queries=q, cells_per_token=k)
    head.norms[0], head.scorer = torch.nn.Identity(), _Raw(q * k * k)
    h = torch.zeros(1, 2 + t * t + 1, 16)  # two text tokens, the image, one more text token
    image = torch.zeros(1, h.shape[1], dtype=torch.bool)
    image[0, 2 : 2 + t * t] = True
    patch = 4  # a token is 2 * 4 = 8 px, a cell 4 px: the image is 24 px
    for token in range(t * t):
        for query in range(q):
            for a in range(k):
                for b in range(k):
                    row = ((token // t) * k + a) * 4 + 2  # the cell's centre pixel
                    col = ((token % t) * k + b) * 4 + 2
                    cell = image_token_index(torch.tensor(row), torch.tensor(col), t * 2 * patch, patch, k).item()
                    h[0, 2 + token, query * k * k + a * k + b] = cell + 100 * query
    scores = head.cell_scores([h], image)
    assert scores.shape == (1, q, 36)
    torch.testing.assert_close(scores[0], torch.stack([torch.arange(36.0), torch.arange(36.0) + 100]))
    # a token's pool logit is the log-sum-exp of its cells: its share of the cell softmax
    tokens = head.grounding_scores([h], image)[0, :, image[0]].softmax(-1)
    cells = scores[0].softmax(-1).view(q, t, k, t, k).sum(dim=(2, 4)).flatten(1)
    torch.testing.assert_close(tokens, cells)


def test_cell_grounded_head_adds_where_its_queries_point() -> None:
    head = PyramidLatentHead([-1], hidden_size=16, latent_dim=12, pooling="grounded", residual=False,
                             queries=1, cells_per_token=2)
    head.norms[0], head.scorer = torch.nn.Identity(), _Raw(4)
    h = torch.zeros(1, 4, 16)
    image = torch.ones(1, 4, dtype=torch.bool)  # 2 x 2 tokens -> a 4 x 4 grid of cells
    h[0, 3, 2] = 60.0  # token (1, 1), its cell (row 1, col 0): grid cell x=2, y=3
    torch.testing.assert_close(head.where([h], image)[0, 0], torch.tensor([2 / 3, 3 / 3]), atol=1e-4, rtol=0)
    head.mlp = torch.nn.Identity()
    features = head([h], torch.ones(1, 4), image_mask=image)[0]
    assert features.shape == (16 + 2,)
    torch.testing.assert_close(features[:16], h[0, 3], atol=1e-4, rtol=0)  # pools the pointed token
    torch.testing.assert_close(features[16:], torch.tensor([2 / 3, 1.0]), atol=1e-4, rtol=0)


def test_cells_per_token_needs_the_grounded_pool_and_a_square_token_grid() -> None:
    with pytest.raises(ValueError, match="cells_per_token=2"):
        PyramidLatentHead([-1], hidden_size=16, latent_dim=12, pooling="mean", cells_per_token=2)
    head = PyramidLatentHead([-1], hidden_size=16, latent_dim=12, pooling="grounded", cells_per_token=2)
    image = torch.zeros(1, 7, dtype=torch.bool)
    image[0, 1:6] = True  # 5 image tokens: not a square grid
    with pytest.raises(ValueError, match="square grid"):
        head.cell_scores([torch.randn(1, 7, 16)], image)
