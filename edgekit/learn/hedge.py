"""Hedge backpropagation (Sahoo et al. 2018, "Online Deep Learning: Learning Deep Neural
Networks on the Fly"): every hidden block gets its own classifier, the prediction is their
mixture weighted by alpha, and alpha follows the hedge algorithm one step at a time.

Exit l (after hidden block l) scores ``f_l = softmax(W_l h_l + b_l)``; the deepest exit is the
Graph's own classifier, the shallower ones are linear heads on the flattened block outputs
(zeros at the start, trained with the weights). A step trains every exit on its cross-entropy
weighted by its alpha (a block's gradient is the alpha-weighted sum of the exits at or after it,
carried back as in backprop), then ``alpha_l *= beta ** loss_l``, ``alpha_l = max(alpha_l,
s / L)``, and alpha is renormalised (beta = 0.99, s = 0.2 as in the paper). Early in a stream
the shallow exits learn fastest and alpha leans on them; as the deep ones catch up it moves
deeper: the network's depth adapts to how much it has seen.

The trained model deploys at the exit alpha trusts most: ``finetune`` returns the Graph cut at
that block with its head (the whole Graph when the deepest exit wins), and the history's
``hedge`` entry has alpha and the exit tensors. Memory is backprop's plus the heads.
"""

from __future__ import annotations

import math

import numpy as np

from edgekit.graph import Graph, Node, TensorInfo
from edgekit.learn import kernels as K
from edgekit.learn.blocks import Block, backward, forward, to_graph
from edgekit.learn.dual import kept
from edgekit.learn.losses import cross_entropy
from edgekit.learn.state import RuleState

BETA, SMOOTHING = 0.99, 0.2


def setup(blocks: list[Block], classes: int, rng: np.random.Generator, beta: float = BETA,
          smoothing: float = SMOOTHING) -> RuleState:
    """A head per hidden block but the last (whose exit is the Graph's classifier), and alpha
    uniform over the exits."""
    params = {}
    for b in blocks[:-2]:
        params[f"hedge.W/{b.name}"] = np.zeros((classes, b.out_size), np.float32)
        params[f"hedge.b/{b.name}"] = np.zeros(classes, np.float32)
    exits = len(blocks) - 1 or 1
    return RuleState({"beta": beta, "smoothing": smoothing}, params=params,
                     buffers={"hedge.alpha": np.full(exits, 1.0 / exits, np.float32)})


def _head(state: RuleState, block: Block) -> tuple[np.ndarray, np.ndarray]:
    return state.params[f"hedge.W/{block.name}"], state.params[f"hedge.b/{block.name}"]


def step(blocks: list[Block], state: RuleState, x: np.ndarray, y: np.ndarray,
         phase: float, rng: np.random.Generator) -> tuple[float, np.ndarray]:
    """One update's gradients (into the blocks' and the heads' grads) and the hedge step on
    alpha: (the alpha-weighted loss, the log of the mixture's probabilities)."""
    alpha, batch = state.buffers["hedge.alpha"], len(y)
    trainable = [i for i, b in enumerate(blocks) if b.trainable]
    first = trainable[0] if trainable else len(blocks)
    dual = state.config.get("dual", False)
    tapes, outs = [], []
    for i, block in enumerate(blocks):
        x, tape = forward(block, x, keep=i >= first)
        tapes.append(kept(tape, dual, tapes[-1].y if dual and i > first else None))
        outs.append(x if i < len(blocks) - 2 else None)  # the shallow exits' inputs
    exits = [_head_logits(state, b, h) for b, h in zip(blocks[:-2], outs)] + [x]
    losses, errors = zip(*(cross_entropy(z, y) for z in exits))
    mixture = sum(a * _softmax(z) for a, z in zip(alpha, exits))
    dx = backward(blocks[-1], tapes[-1], alpha[-1] * errors[-1], need_dx=first < len(blocks) - 1)
    for i in range(len(blocks) - 2, -1, -1):
        if i < len(blocks) - 2:  # a shallow exit reads this block's output
            w, b = _head(state, blocks[i])
            e = (alpha[i] * errors[i]).astype(np.float32)
            h = np.ascontiguousarray(outs[i].reshape(batch, -1))
            K.matmul_acc(e.T, h, state.grads[f"hedge.W/{blocks[i].name}"])
            K.row_sum_acc(e.T, state.grads[f"hedge.b/{blocks[i].name}"])
            through = e @ w
            dx = through if dx is None else dx.reshape(batch, -1) + through
            outs[i] = None
        if i >= first:
            dx = backward(blocks[i], tapes[i], dx, need_dx=i > first)
        tapes[i] = None
    loss = float(np.dot(alpha, losses))
    alpha *= np.power(state.config["beta"], np.asarray(losses, np.float32))
    np.maximum(alpha, state.config["smoothing"] / len(alpha), out=alpha)
    alpha /= alpha.sum()
    return loss, np.log(np.maximum(mixture, 1e-30)).astype(np.float32)


def _head_logits(state: RuleState, block: Block, h: np.ndarray) -> np.ndarray:
    w, b = _head(state, block)
    return (h.reshape(len(h), -1) @ w.T + b).astype(np.float32)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def export(graph: Graph, blocks: list[Block], state: RuleState) -> tuple[Graph, dict]:
    """The Graph to deploy, cut at the exit alpha weighs most (the whole Graph at the deepest),
    and what the history reports: alpha and the exits' tensors."""
    alpha = state.buffers["hedge.alpha"]
    names = [b.output for b in blocks[:-2]] + [graph.outputs[0]]
    best = int(np.argmax(alpha))
    report = {"hedge": {"alpha": [float(a) for a in alpha], "exits": names,
                        "exit": names[best]}}
    full = to_graph(graph, blocks)
    if best == len(alpha) - 1:
        return full, report
    return cut(full, blocks[best].output, *_head(state, blocks[best])), report


def cut(graph: Graph, tensor: str, weight: np.ndarray, bias: np.ndarray) -> Graph:
    """``graph`` up to ``tensor``, then a linear head on it (flattened first if it is a map)."""
    upto = next(i for i, n in enumerate(graph.nodes) if tensor in n.outputs)
    nodes = list(graph.nodes[:upto + 1])
    tensors = {name: info for name, info in graph.tensors.items()
               if name in graph.inputs or any(name in n.outputs or name in n.inputs
                                              for n in nodes)}
    params = {name: v for name, v in graph.params.items() if name in tensors}
    shape = graph.tensors[tensor].shape
    width = math.prod(shape[1:])
    if len(shape) > 2:
        flat = f"{tensor}.hedge_flat"
        nodes.append(Node("reshape", [tensor], [flat], {"shape": [width]}))
        tensors[flat] = TensorInfo((shape[0], width), "float32")
        tensor = flat
    w, b, out = "hedge.weight", "hedge.bias", "hedge.logits"
    params.update({w: weight.copy(), b: bias.copy()})
    tensors.update({w: TensorInfo(weight.shape, "float32"), b: TensorInfo(bias.shape, "float32"),
                    out: TensorInfo((shape[0], len(bias)), "float32")})
    nodes.append(Node("linear", [tensor, w, b], [out], {"activation": "none"}, "hedge"))
    return Graph(list(graph.inputs), [out], tensors, nodes, params, dict(graph.metadata))
