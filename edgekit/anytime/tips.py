"""Path sampling for training an anytime supernet: uniform, and TIPS (topologically important
path sampling, after Li et al., ICML 2023). numpy only.

What the paper gives, and what is inferred here
-----------------------------------------------
Given: feature maps are the nodes of the supernet's DAG, operations its edges; removing edges
gives the sub-networks ``G_1..G_T``; their adjacency matrices are coupled into a
hyper-adjacency matrix of a discrete-time Markov chain (DTMC) over training; a per-node
*topological accumulation score* (TAS) and a per-path score find the paths that contribute
most to training, and training samples those paths more often than uniform sampling does.
The equations are not public; the ones below are **inferred** from that description.

The DAG (``dag``): nodes ``v_0..v_L`` (the residual stream between blocks) and, per block and
branch, one hidden node ``h`` (the branch's expanded feature map); edges ``v_i -> v_{i+1}``
(identity, in every path), ``v_i -> h`` and ``h -> v_{i+1}`` (a branch). ``A_t`` is the 0/1
adjacency of path ``t`` (its branches' edges and the identities).

1. Hyper-adjacency (inferred): training draws path ``t`` with probability ``p_t``, so the
   sub-networks couple into the expected adjacency ``H = sum_t p_t A_t``: ``H[u, v]`` is the
   probability that edge ``u -> v`` is trained in a step.
2. DTMC (inferred): a unit of training signal (the loss gradient) enters at the output node
   ``v_L`` and each step moves from a node ``v`` to a predecessor ``u`` with probability
   ``P[v, u] = H[u, v] / sum_u' H[u', v]``; ``v_0`` absorbs it. The chain runs over the
   DAG's depth, so it is transient and ``P`` is nilpotent.
3. Node score (inferred): TAS is the accumulated state distribution,
   ``TAS = sum_k e_out P^k = e_out (I - P)^-1``: the expected number of visits to each node,
   i.e. how much of the training signal flows through it under ``p``.
4. Path score (inferred): ``S_t = sum over the nodes of G_t of TAS``, the share of the
   training signal that path ``t`` carries; nodes in every path add the same to every
   ``S_t``, so only the hidden nodes rank paths.
5. Sampling (inferred): ``q = (1 - mix) uniform + mix * S / sum(S)``, with ``S`` computed
   under ``p = q`` itself: a fixed point, found by iterating from uniform (it converges in a
   few rounds; ``importance``). ``mix`` keeps every path sampled.

So TIPS here samples the paths that carry the most accumulated training signal (the wide,
shared branches) more often than uniform sampling, while still visiting every path. Whether
that helps is measured, never assumed: ``benchmarks/anytime.py`` trains the same supernet with
uniform sampling beside it (README, "Anytime networks").
"""

from __future__ import annotations

import numpy as np

from edgekit.anytime.supernet import all_paths


def dag(blocks: int) -> tuple[list[str], list[np.ndarray]]:
    """Node names and one adjacency matrix per path of ``all_paths(blocks)``."""
    names = [f"v{i}" for i in range(blocks + 1)]
    names += [f"h{i}{b}" for i in range(blocks) for b in "ab"]
    index = {n: k for k, n in enumerate(names)}
    mats = []
    for path in all_paths(blocks):
        a = np.zeros((len(names), len(names)))
        for i, choice in enumerate(path):
            a[index[f"v{i}"], index[f"v{i + 1}"]] = 1
            for branch in "ab"[:int(choice)]:
                a[index[f"v{i}"], index[f"h{i}{branch}"]] = 1
                a[index[f"h{i}{branch}"], index[f"v{i + 1}"]] = 1
        mats.append(a)
    return names, mats


def tas(mats: list[np.ndarray], p: np.ndarray, output: int) -> np.ndarray:
    """Topological accumulation score of every node under path probabilities ``p``
    (steps 1-3 of the module docstring)."""
    h = np.tensordot(p, np.stack(mats), axes=1)
    into = h.sum(0)
    back = np.divide(h, into, out=np.zeros_like(h), where=into > 0).T  # P[v, u]
    start = np.zeros(len(h))
    start[output] = 1.0
    return np.linalg.solve((np.eye(len(h)) - back).T, start)


def importance(blocks: int, mix: float = 0.5, rounds: int = 20) -> np.ndarray:
    """TIPS' sampling probabilities over ``all_paths(blocks)`` (steps 4-5)."""
    names, mats = dag(blocks)
    visits = np.stack([m.sum(0) + m.sum(1) > 0 for m in mats]).astype(float)  # nodes of G_t
    uniform = np.full(len(mats), 1.0 / len(mats))
    q = uniform
    for _ in range(rounds):
        score = visits @ tas(mats, q, names.index(f"v{blocks}"))
        q = (1 - mix) * uniform + mix * score / score.sum()
    return q


class PathSampler:
    """Draws the paths of each training step: ``"uniform"`` or ``"tips"``; ``sandwich`` adds
    the largest and smallest path to every step (the sandwich rule)."""

    def __init__(self, blocks: int, method: str = "tips", sandwich: bool = False,
                 seed: int = 0, mix: float = 0.5):
        self.paths = all_paths(blocks)
        self.p = (importance(blocks, mix) if method == "tips"
                  else np.full(len(self.paths), 1.0 / len(self.paths)))
        self.sandwich = sandwich
        self.rng = np.random.default_rng(seed)

    def draw(self, k: int) -> list[str]:
        drawn = [self.paths[i] for i in self.rng.choice(len(self.paths), k, p=self.p)]
        return [self.paths[-1], self.paths[0], *drawn] if self.sandwich else drawn
