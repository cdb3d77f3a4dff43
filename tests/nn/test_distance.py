"""CosineSimilarity and PairwiseDistance against torch.nn."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxnets import nn


@pytest.mark.parametrize(
    "kwargs, s1, s2", [({}, (4, 5), (4, 5)), (dict(dim=-1), (3, 4, 5), (1, 5)), (dict(dim=0, eps=0.5), (5, 3), (5, 3))], ids=str
)
def test_cosine_similarity_matches_torch(kwargs, s1, s2, close, rng):
    x1 = rng.standard_normal(s1).astype(np.float32)
    x2 = rng.standard_normal(s2).astype(np.float32)
    x2[0] = 0.0  # a zero vector: the eps clamp matters
    y, _ = nn.CosineSimilarity(**kwargs).apply({}, {}, jnp.asarray(x1), jnp.asarray(x2))
    close(y, torch.nn.CosineSimilarity(**kwargs)(torch.from_numpy(x1), torch.from_numpy(x2)))


@pytest.mark.parametrize("kwargs", [{}, dict(p=1.0), dict(p=3.0, keepdim=True), dict(eps=0.1)], ids=str)
def test_pairwise_distance_matches_torch(kwargs, close, rng):
    x1 = rng.standard_normal((4, 6)).astype(np.float32)
    x2 = rng.standard_normal((4, 6)).astype(np.float32)
    y, _ = nn.PairwiseDistance(**kwargs).apply({}, {}, jnp.asarray(x1), jnp.asarray(x2))
    close(y, torch.nn.PairwiseDistance(**kwargs)(torch.from_numpy(x1), torch.from_numpy(x2)))
