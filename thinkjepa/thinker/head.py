"""The latent head: several VLM layers -> one subgoal latent z* in the world model's space.

Design decisions:

* **Pyramid.** Hidden states are taken from several language-model layers (as the ThinkJEPA paper does): the
  middle layers keep more of the image's spatial detail, the last ones more of the instruction's meaning.
  Each selected layer is layer-normed and pooled over its valid tokens (image and text alike) by a masked
  mean or by a learned attention query; the pooled vectors are concatenated and an MLP maps them to ``D``.
* **Grounded pooling** (``pooling="grounded"``): ``queries`` scorers rate every *image* token, and each
  layer is pooled with the softmax of each scorer's scores. Trained with grounding losses
  (:class:`~thinkjepa.train.thinker.ThinkerModule`), query 0 reads the token that shows the object the
  instruction names and query 1 (if any) the token where the agent will stand at the subgoal: the
  instruction picks *where*, the head turns it into the subgoal latent. With ``router`` set, query 1 is scored
  by a convolutional :class:`~thinkjepa.thinker.router.GridRouter` over the image-token grid (fed every
  token and its query-0 logit), which can work out the route to the named object that a linear read-out of
  one token cannot; its features at the chosen cell join the pooled ones.
* **Residual on the current latent** (``residual=True``): ``z* = z_t + Δ`` with ``z_t`` the frozen world
  model's target-encoder latent of the current frame, and ``Δ = MLP([pooled, LN(z_t)])``. The MLP's last
  layer starts at zero, so an untrained head *is* the "copy the current latent" baseline, and training only
  has to learn where the subgoal lies relative to here; without it the head must also rebuild the
  world model's whole scene code from VLM features, which a small VLM does poorly. ``residual=False`` gives
  the plain ``z* = MLP(pooled)`` for comparison.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from thinkjepa.thinker.router import GridRouter, RouterOptions

Pooling = Literal["mean", "attention", "last", "grounded"]


@dataclass(frozen=True)
class HeadOptions:
    """How the latent head reads the VLM (the sizes come from the VLM and the world model)."""

    layers: tuple[int, ...] = (-1, -2)
    """Which ``output_hidden_states`` entries to pool: 0 is the embeddings, -1 the last layer."""
    pooling: Pooling = "mean"
    """``mean`` over valid tokens, ``attention`` (one learned query per layer), ``last`` valid token, or
    ``grounded``: attention over the *image* tokens with one scorer, which a grounding loss can teach to
    point at the named object (:meth:`PyramidLatentHead.grounding_scores`)."""
    hidden_dim: int = 256
    """Width of the MLP after pooling."""
    residual: bool = True
    """Predict ``z* = z_t + Δ`` from the current frame's world-model latent (see the module docstring)."""
    queries: int = 1
    """``grounded`` pooling only: how many scorers pool the image tokens (0: the named object, 1: the
    subgoal's agent cell; each can be taught by its own grounding loss)."""
    router: dict | None = None
    """``grounded`` pooling with 2 queries only: score the second query (the subgoal's agent cell) with a
    :class:`~thinkjepa.thinker.router.GridRouter` over the image-token grid instead of a linear scorer, given as
    its :class:`~thinkjepa.thinker.router.RouterOptions` (``{}`` for the defaults); its features at that cell
    join the pooled ones."""


class _AttentionPool(nn.Module):
    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.zeros(hidden_size))  # zero query starts as the masked mean

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = (h @ self.query) / math.sqrt(h.shape[-1])  # (B, S)
        scores = scores.masked_fill(~mask, float("-inf"))
        return torch.einsum("bs,bsh->bh", scores.softmax(dim=-1), h)


class PyramidLatentHead(nn.Module):
    """Pool hidden states of several VLM layers into a world-model latent ``(B, latent_dim)``.

    Args:
        layers: Indices into the VLM's ``hidden_states`` tuple (negative counts from the last layer).
        hidden_size: Width of those hidden states.
        latent_dim: The world model's latent size ``D``; the output has exactly this size.
        pooling: ``mean`` (masked mean over valid tokens), ``attention`` (learned query per layer), ``last``
            (the last valid token, which in a causal LM has attended to the whole image and instruction) or
            ``grounded`` (softmax of each of ``queries`` scorers over the image tokens of the first listed
            layer; needs ``image_mask`` in :meth:`forward`).
        hidden_dim: Width of the MLP.
        residual: Output ``z_current + Δ`` (needs ``z_current`` in :meth:`forward`) instead of a plain MLP.
        queries: Scorers of the ``grounded`` pool (must be 1 for the other poolings).
        router: :class:`~thinkjepa.thinker.router.RouterOptions` fields: the second of 2 grounded queries is
            scored by a :class:`~thinkjepa.thinker.router.GridRouter` (see :class:`HeadOptions`).
    """

    def __init__(
        self,
        layers: Sequence[int],
        hidden_size: int,
        latent_dim: int,
        pooling: Pooling = "mean",
        hidden_dim: int = 256,
        residual: bool = True,
        queries: int = 1,
        router: dict | None = None,
    ) -> None:
        super().__init__()
        if not layers:
            raise ValueError("PyramidLatentHead needs at least one layer index in `layers`")
        if pooling not in ("mean", "attention", "last", "grounded"):
            raise ValueError(f"pooling must be 'mean', 'attention', 'last' or 'grounded', got {pooling!r}")
        if queries < 1 or (queries > 1 and pooling != "grounded"):
            raise ValueError(f"queries={queries}: the grounded pool takes 1 or more, every other pooling exactly 1")
        if router is not None and (pooling != "grounded" or queries != 2):
            raise ValueError(
                f"head.router scores the second of 2 grounded queries: it needs pooling='grounded' and queries=2, "
                f"got pooling={pooling!r}, queries={queries}"
            )
        self.layers = tuple(int(i) for i in layers)
        self.hidden_size, self.latent_dim, self.residual = hidden_size, latent_dim, residual
        router = None if router is None else asdict(RouterOptions(**router))
        self.options = HeadOptions(self.layers, pooling, hidden_dim, residual, queries, router)
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_size) for _ in self.layers)
        self.pools = (
            nn.ModuleList(_AttentionPool(hidden_size) for _ in self.layers)
            if pooling == "attention"
            else None
        )
        linear = queries - 1 if router is not None else queries  # the router scores the last query
        self.scorer = nn.Linear(hidden_size, linear) if pooling == "grounded" else None
        if self.scorer is not None:  # an untrained scorer pools the image tokens evenly
            nn.init.zeros_(self.scorer.weight)
            nn.init.zeros_(self.scorer.bias)
        self.router = GridRouter(hidden_size, **router) if router is not None else None
        in_dim = queries * len(self.layers) * hidden_size + (latent_dim if residual else 0)
        in_dim += router["channels"] if router is not None else 0
        self.latent_norm = nn.LayerNorm(latent_dim) if residual else None
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, latent_dim))
        if residual:  # an untrained residual head copies the current latent
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

    def config(self) -> dict:
        """The constructor arguments, JSON-serialisable (stored in thinker checkpoints)."""
        return {
            **asdict(self.options),
            "layers": list(self.layers),
            "hidden_size": self.hidden_size,
            "latent_dim": self.latent_dim,
        }

    def grounding_scores(self, hidden_states: Sequence[torch.Tensor], image_mask: torch.Tensor) -> torch.Tensor:
        """``(B, Q, S)`` logits of the grounded pool's ``Q`` queries on the first listed layer, ``-inf`` off the image.

        Raises:
            ValueError: the head's pooling is not ``grounded``, or a sample has no image token.
        """
        return self._ground(hidden_states, image_mask)[0]

    def _ground(
        self, hidden_states: Sequence[torch.Tensor], image_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`grounding_scores` and, with a router, its ``(B, S, channels)`` features (0 off the image)."""
        if self.scorer is None:
            raise ValueError(f"grounding_scores needs pooling='grounded', this head pools by {self.options.pooling!r}")
        image_mask = image_mask.bool()
        if not image_mask.any(dim=1).all():
            raise ValueError("grounded pooling: a sample has no image token in image_mask")
        h = self.norms[0](hidden_states[self.layers[0]].float())  # (B, S, H)
        scores = self.scorer(h)  # (B, S, Q or Q-1)
        features = None
        if self.router is not None:
            b, s = image_mask.shape
            counts = image_mask.sum(dim=1)
            if not (counts == counts[0]).all():
                raise ValueError(f"head.router: samples have different numbers of image tokens ({counts.tolist()})")
            n = int(counts[0])
            way, _, feats = self.router(h[image_mask].view(b, n, -1), scores[..., 0][image_mask].view(b, n))
            routed = scores.new_zeros(b, s)
            routed[image_mask] = way.flatten()
            features = h.new_zeros(b, s, feats.shape[-1])
            features[image_mask] = feats.flatten(0, 1)
            scores = torch.cat([scores, routed.unsqueeze(-1)], dim=-1)
        return scores.transpose(1, 2).masked_fill(~image_mask.unsqueeze(1), float("-inf")), features

    def forward(
        self,
        hidden_states: Sequence[torch.Tensor],
        attention_mask: torch.Tensor,
        z_current: torch.Tensor | None = None,
        image_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pool and project.

        Args:
            hidden_states: The VLM's per-layer hidden states, each ``(B, S, hidden_size)``.
            attention_mask: ``(B, S)``, nonzero at valid (non-padding) tokens.
            z_current: ``(B, latent_dim)`` world-model latent of the current frame; required if ``residual``.
            image_mask: ``(B, S)``, nonzero at image tokens; required by ``grounded`` pooling.

        Returns:
            ``(B, latent_dim)`` float32 subgoal latents.
        """
        n = len(hidden_states)
        if any(not -n <= i < n for i in self.layers):
            raise ValueError(f"Head layers {list(self.layers)} out of range for {n} hidden-state tensors")
        mask = attention_mask.bool()  # (B, S)
        routed = None
        if self.options.pooling == "grounded":
            if image_mask is None:
                raise ValueError("grounded pooling needs image_mask (which tokens are the image's)")
            scores, routed = self._ground(hidden_states, image_mask.bool() & mask)
            weights = scores.softmax(dim=-1)  # (B, Q, S)
        elif self.options.pooling == "last":  # one-hot on the last valid token, whichever side is padded
            positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
            weights = (positions == positions.masked_fill(~mask, -1).amax(dim=1, keepdim=True)).float()[:, None]
        else:
            weights = (mask.float() / mask.sum(dim=1, keepdim=True).clamp(min=1))[:, None]  # (B, 1, S)
        pooled = []
        for k, i in enumerate(self.layers):
            h = self.norms[k](hidden_states[i].float())  # (B, S, H)
            pooled.append(
                self.pools[k](h, mask) if self.pools is not None else torch.einsum("bqs,bsh->bqh", weights, h).flatten(1)
            )
        if routed is not None:  # the router's features where it sends the agent
            pooled.append(torch.einsum("bs,bsc->bc", weights[:, -1], routed))
        features = torch.cat(pooled, dim=-1)  # (B, L*Q*H [+ channels])
        if not self.residual:
            return self.mlp(features)
        if z_current is None:
            raise ValueError(
                "This head is residual (z* = z_t + Δ): pass z_current, the world model's latent (B, D)"
            )
        if z_current.shape != (features.shape[0], self.latent_dim):
            raise ValueError(
                f"z_current has shape {tuple(z_current.shape)}, expected ({features.shape[0]}, {self.latent_dim})"
            )
        z_current = z_current.float()
        return z_current + self.mlp(torch.cat([features, self.latent_norm(z_current)], dim=-1))
