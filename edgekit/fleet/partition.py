"""Splitting one labelled data set into client shards: IID, or label-skewed by a Dirichlet
draw per class (Hsu et al. 2019: each class's examples go to the clients in proportions drawn
from Dir(alpha); small alpha gives each client few classes)."""

from __future__ import annotations

import math

import numpy as np

from edgekit.errors import EdgekitError

_TRIES = 100  # Dirichlet draws before giving up on shards of the minimum size


def parse(spec: str) -> float | None:
    """``iid`` -> None, ``label`` -> 0.5, ``label:ALPHA`` -> ALPHA (> 0)."""
    if spec == "iid":
        return None
    kind, _, alpha = spec.partition(":")
    try:
        value = float(alpha) if alpha else 0.5
    except ValueError:
        value = math.nan
    if kind != "label" or not math.isfinite(value) or value <= 0:
        raise EdgekitError(f"partition must be 'iid', 'label' or 'label:ALPHA' with ALPHA > 0, "
                           f"got {spec!r}")
    return value


def partition(y: np.ndarray, clients: int, spec: str = "iid", seed: int = 0) -> list[np.ndarray]:
    """Indices into ``y`` for each of ``clients`` shards; every shard gets at least one example
    (a label-skewed draw is repeated until each holds ``min(10, N / (2 * clients))``)."""
    alpha = parse(spec)
    n = len(y)
    if type(clients) is not int or clients < 1:
        raise EdgekitError(f"clients must be a positive int, got {clients!r}")
    if n < clients:
        raise EdgekitError(f"{n} examples cannot make {clients} non-empty shards")
    rng = np.random.default_rng(seed)
    if alpha is None:
        return [np.sort(part) for part in np.array_split(rng.permutation(n), clients)]
    least = max(1, min(10, n // (2 * clients)))
    for _ in range(_TRIES):
        shards: list[list[int]] = [[] for _ in range(clients)]
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(clients, alpha)))[:-1] * len(idx))
            for shard, part in zip(shards, np.split(idx, cuts.astype(int))):
                shard.extend(part.tolist())
        if min(map(len, shards)) >= least:
            return [np.sort(np.array(s, dtype=np.int64)) for s in shards]
    raise EdgekitError(f"label:{alpha:g} left a shard with fewer than {least} examples in "
                       f"{_TRIES} draws; use fewer clients or a larger ALPHA")
