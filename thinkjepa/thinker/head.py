"""The latent head: several VLM layers -> one subgoal latent z* in the world model's space.

Design decisions:

* **Pyramid.** Hidden states are taken from several language-model layers (as the ThinkJEPA paper does): the
  middle layers keep more of the image's spatial detail, the last ones more of the instruction's meaning.
  Each selected layer is layer-normed and pooled over its valid tokens (image and text alike) by a masked
  mean or by a learned attention query; the pooled vectors are concatenated and an MLP maps them to ``D``.
* **Grounded pooling** (``pooling="grounded"``): ``queries`` scorers rate every *image* token, and each
  layer is pooled with the softmax of each scorer's scores. Trained with grounding losses
  (:class:`~thinkjepa.thinker.module.ThinkerModule`), query 0 reads the token that shows the object the
  instruction names and query 1 (if any) the token where the agent will stand at the subgoal: the
  instruction picks *where*, the head turns it into the subgoal latent.
* **Cell-level grounding** (``cells_per_token=k``): when the VLM's image tokens each cover a ``k x k`` block
  of grid cells (patches aligned with the cells), each scorer rates every *cell* — ``k²`` logits per token —
  so a grounding loss can name the exact cell instead of a token spanning several. A token's pooling weight
  is the summed probability of its cells, and each query adds the expected ``(x, y)`` of its cell
  distribution to the pooled features: the precise "where", which the token's features blur over ``k²``
  cells. Per-token scoring was what limited grounding in nine rooms: ``benchmarks/grounding.py`` finds the
  named GoTo object with a per-cell read-out within 500 steps and never with a flat one.
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
    cells_per_token: int = 1
    """``grounded`` pooling only: each image token covers ``k x k`` grid cells and the scorers rate each cell
    (:meth:`PyramidLatentHead.cell_scores`); ``k > 1`` also appends each query's expected cell ``(x, y)``."""


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
        cells_per_token: ``grounded`` only: grid cells per image token side, each scored on its own.
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
        cells_per_token: int = 1,
    ) -> None:
        super().__init__()
        if not layers:
            raise ValueError("PyramidLatentHead needs at least one layer index in `layers`")
        if pooling not in ("mean", "attention", "last", "grounded"):
            raise ValueError(f"pooling must be 'mean', 'attention', 'last' or 'grounded', got {pooling!r}")
        if queries < 1 or (queries > 1 and pooling != "grounded"):
            raise ValueError(f"queries={queries}: the grounded pool takes 1 or more, every other pooling exactly 1")
        if cells_per_token < 1 or (cells_per_token > 1 and pooling != "grounded"):
            raise ValueError(
                f"cells_per_token={cells_per_token}: the grounded pool takes 1 or more, every other pooling exactly 1"
            )
        self.layers = tuple(int(i) for i in layers)
        self.hidden_size, self.latent_dim, self.residual = hidden_size, latent_dim, residual
        self.options = HeadOptions(self.layers, pooling, hidden_dim, residual, queries, cells_per_token)
        self.cells = cells_per_token
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_size) for _ in self.layers)
        self.pools = (
            nn.ModuleList(_AttentionPool(hidden_size) for _ in self.layers)
            if pooling == "attention"
            else None
        )
        self.scorer = nn.Linear(hidden_size, queries * cells_per_token**2) if pooling == "grounded" else None
        if self.scorer is not None:  # an untrained scorer pools the image tokens evenly
            nn.init.zeros_(self.scorer.weight)
            nn.init.zeros_(self.scorer.bias)
        where = 2 * queries if cells_per_token > 1 else 0  # each query's expected cell (x, y)
        in_dim = queries * len(self.layers) * hidden_size + where + (latent_dim if residual else 0)
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

    def _raw_scores(self, hidden_states: Sequence[torch.Tensor], image_mask: torch.Tensor) -> torch.Tensor:
        """``(B, S, Q, k²)`` scorer logits on the first listed layer (every position, image or not)."""
        if self.scorer is None:
            raise ValueError(f"grounding needs pooling='grounded', this head pools by {self.options.pooling!r}")
        if not image_mask.bool().any(dim=1).all():
            raise ValueError("grounded pooling: a sample has no image token in image_mask")
        h = self.norms[0](hidden_states[self.layers[0]].float())  # (B, S, H)
        return self.scorer(h).unflatten(-1, (self.options.queries, self.cells**2))

    def grounding_scores(self, hidden_states: Sequence[torch.Tensor], image_mask: torch.Tensor) -> torch.Tensor:
        """``(B, Q, S)`` logits of the grounded pool's ``Q`` queries on the first listed layer, ``-inf`` off the image.

        With ``cells_per_token > 1`` a token's logit is the log-sum-exp of its cells' (its share of the cell
        softmax).

        Raises:
            ValueError: the head's pooling is not ``grounded``, or a sample has no image token.
        """
        scores = self._raw_scores(hidden_states, image_mask).logsumexp(dim=-1)  # (B, S, Q)
        return scores.transpose(1, 2).masked_fill(~image_mask.bool().unsqueeze(1), float("-inf"))

    def cell_scores(self, hidden_states: Sequence[torch.Tensor], image_mask: torch.Tensor) -> torch.Tensor:
        """``(B, Q, C)`` logits over the grid cells the image tokens cover, row-major (C = (T k)² for T x T tokens).

        The image tokens must be a row-major ``T x T`` grid of the same size in every sample (the tiny VLMs'
        order: :func:`thinkjepa.thinker.vlm.image_token_index`), and a token's ``k²`` logits its cells row-major.

        Raises:
            ValueError: not ``grounded``, or the samples' image tokens are not one square grid of equal size.
        """
        raw = self._raw_scores(hidden_states, image_mask)
        image_mask = image_mask.bool()
        counts = image_mask.sum(dim=1)
        n = int(counts[0])
        t = math.isqrt(n)
        if not bool((counts == n).all()) or t * t != n:
            raise ValueError(
                f"cell_scores needs every sample's image tokens to form one square grid, got counts {counts.tolist()}"
            )
        b, q, k = raw.shape[0], self.options.queries, self.cells
        tokens = raw[image_mask].view(b, t, t, q, k, k)  # (B, token row, token col, Q, cell row, cell col)
        return tokens.permute(0, 3, 1, 4, 2, 5).reshape(b, q, n * k * k)

    def where(self, hidden_states: Sequence[torch.Tensor], image_mask: torch.Tensor) -> torch.Tensor:
        """``(B, Q, 2)``: each query's expected cell ``(x, y)`` under its cell softmax, in ``[0, 1]``."""
        probs = self.cell_scores(hidden_states, image_mask).softmax(dim=-1)  # (B, Q, C)
        side = math.isqrt(probs.shape[-1])
        axis = torch.linspace(0, 1, side, device=probs.device)
        grid = torch.stack([axis.repeat(side), axis.repeat_interleave(side)], dim=-1)  # (C, 2): x, y row-major
        return probs @ grid

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
        if self.options.pooling == "grounded":
            if image_mask is None:
                raise ValueError("grounded pooling needs image_mask (which tokens are the image's)")
            weights = self.grounding_scores(hidden_states, image_mask.bool() & mask).softmax(dim=-1)  # (B, Q, S)
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
        if self.cells > 1:
            pooled.append(self.where(hidden_states, image_mask.bool() & mask).flatten(1))
        features = torch.cat(pooled, dim=-1)  # (B, L*Q*H [+ 2Q])
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
