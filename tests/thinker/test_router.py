"""The grid router: it routes across the token grid where a per-token read-out cannot, and the head uses it."""

from __future__ import annotations

import pytest
import torch

from thinkjepa.thinker.head import PyramidLatentHead
from thinkjepa.thinker.router import GridRouter

SIDE, SHIFT = 8, 5


def _task(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noise tokens, a one-hot object logit; the answer is the cell ``SHIFT`` to the right of the object."""
    x = torch.randint(0, SIDE - SHIFT, (n,), generator=generator)
    y = torch.randint(0, SIDE, (n,), generator=generator)
    tokens = torch.randn(n, SIDE * SIDE, 4, generator=generator)
    obj = torch.zeros(n, SIDE * SIDE)
    obj[torch.arange(n), y * SIDE + x] = 4.0
    return tokens, obj, y * SIDE + x + SHIFT


def _train(router: GridRouter, steps: int = 150) -> float:
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(router.parameters(), lr=3e-3)
    for _ in range(steps):
        tokens, obj, target = _task(64, g)
        loss = torch.nn.functional.cross_entropy(router(tokens, obj)[0], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    tokens, obj, target = _task(256, g)
    with torch.no_grad():
        return (router(tokens, obj)[0].argmax(-1) == target).float().mean().item()


def test_a_dilated_router_finds_a_cell_five_away_and_a_shallow_one_cannot() -> None:
    torch.manual_seed(0)
    far = _train(GridRouter(4, channels=16, depth=3, dilated=True))  # sees 15 x 15 cells
    near = _train(GridRouter(4, channels=16, depth=2, dilated=False))  # sees 5 x 5: the object is out of view
    assert far > 0.9, far
    assert near < 0.3, near


def test_router_shapes_and_errors() -> None:
    router = GridRouter(4, channels=8, depth=2)
    way, heading, features = router(torch.randn(3, 49, 4), torch.zeros(3, 49))
    assert way.shape == (3, 49) and heading.shape == (3, 49, 4) and features.shape == (3, 49, 8)
    with pytest.raises(ValueError, match="square"):
        router(torch.randn(3, 50, 4), torch.zeros(3, 50))
    with pytest.raises(ValueError, match="object_logits"):
        router(torch.randn(3, 49, 4), torch.zeros(3, 48))
    with pytest.raises(ValueError, match="channels"):
        GridRouter(4, channels=0)


def _hidden(b: int = 2, text: int = 3, image: int = 16, h: int = 8) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    hidden = [torch.randn(b, text + image + 1, h) for _ in range(3)]
    image_mask = torch.zeros(b, text + image + 1, dtype=torch.bool)
    image_mask[:, text:text + image] = True
    return hidden, torch.ones(b, text + image + 1), image_mask


def test_head_scores_the_second_query_with_the_router_and_pools_its_features() -> None:
    torch.manual_seed(0)
    head = PyramidLatentHead([-1, 1], hidden_size=8, latent_dim=6, pooling="grounded", queries=2,
                             router={"channels": 4, "depth": 2})
    hidden, attention, image = _hidden()
    scores = head.grounding_scores(hidden, image)
    assert scores.shape == (2, 2, 20) and torch.isinf(scores[:, :, :3]).all() and torch.isinf(scores[:, :, -1]).all()
    tokens = head.norms[0](hidden[-1])[image].view(2, 16, 8)
    obj = head.scorer(tokens)[..., 0]
    torch.testing.assert_close(scores[:, 0, 3:19], obj)
    torch.testing.assert_close(scores[:, 1, 3:19], head.router(tokens, obj)[0])

    # the router's features reach z*: change its last convolution and z* moves (the head's MLP is trained first,
    # since a residual head starts as the copy of z_t)
    torch.nn.init.normal_(head.mlp[-1].weight)
    z_t = torch.randn(2, 6)
    before = head(hidden, attention, z_t, image)
    with torch.no_grad():
        head.router.convs[-1].bias.add_(1.0)
    assert not torch.allclose(before, head(hidden, attention, z_t, image))

    # the config rebuilds the same head (thinker checkpoints store it)
    again = PyramidLatentHead(**head.config())
    again.load_state_dict(head.state_dict())
    torch.testing.assert_close(again(hidden, attention, z_t, image), head(hidden, attention, z_t, image))

    with pytest.raises(ValueError, match="queries=2"):
        PyramidLatentHead([-1], 8, 6, pooling="grounded", queries=1, router={})
    with pytest.raises(ValueError, match="pooling='grounded'"):
        PyramidLatentHead([-1], 8, 6, pooling="mean", router={})
    uneven = image.clone()
    uneven[1, 3] = False
    with pytest.raises(ValueError, match="different numbers of image tokens"):
        head.grounding_scores(hidden, uneven)
