"""A sequential float Graph seen as training blocks: conv2d or linear, one activation, one pool.

That is the unit every local rule trains on its own (LLS's conv → BN → leaky ReLU → pool, with
BN folded into the conv at import, or stood in for by ``edgekit.learn.norm``), and the unit
backprop chains.

``forward`` keeps (in a ``Tape``) only what ``backward`` needs: the block input (for the weight
gradient), the block output, and, behind a max pool, the winning taps as uint8 — never the
pre-pool activations. Conv blocks run one sample at a time through one-sample scratch, so the
batch never holds im2row rows or pre-pool maps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph
from edgekit.learn import kernels as K
from edgekit.learn.norm import Norm, fold
from edgekit.ops import OPS, implementation
from edgekit.runtime.kernels import conv, elementwise, linear, pool

_BOUNDS = elementwise.ACTIVATION_BOUNDS


@dataclass
class Pool:
    kind: str  # "max", "avg" or "global"
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    count_include_pad: bool = True


POINTWISE = -1  # Block.act of a pointwise op's activation (its Pointwise computes it)


@dataclass(frozen=True)
class Pointwise:
    """A pointwise op's activation (``edgekit.ops.pointwise``): ``forward(x, out)``, and
    ``backward(y, dy, out)``: ``dy * f'`` with f' read from the activation's output ``y``."""

    forward: Callable[[np.ndarray, np.ndarray], None]
    backward: Callable[[np.ndarray, np.ndarray, np.ndarray], None]


@dataclass
class Block:
    """One trainable layer with what follows it up to the next one (shapes are per sample)."""

    name: str
    op: str  # "conv2d" or "linear"
    weight: np.ndarray
    bias: np.ndarray
    weight_name: str
    bias_name: str | None
    in_shape: tuple[int, ...]
    z_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    fused: str = "none"  # the activation clamp fused into the dense op
    act: int = 0  # ACT_CODES of the block's activation (fused or standalone), or POINTWISE
    alpha: float = 0.0
    pointwise: Pointwise | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    pool: Pool | None = None
    trainable: bool = True
    norm: Norm | None = None
    grads: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Trainable arrays by name (a graph without a bias keeps it fixed at zero)."""
        names = {self.weight_name: self.weight}
        if self.bias_name:
            names[self.bias_name] = self.bias
        if self.norm:
            names.update({f"norm.gamma/{self.name}": self.norm.gamma,
                          f"norm.beta/{self.name}": self.norm.beta})
        return names

    def kernel_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """The weight and bias the kernels run: the block's own, or folded with its norm."""
        return fold(self.weight, self.bias, self.norm) if self.norm else (self.weight,
                                                                          self.bias)

    @property
    def out_size(self) -> int:
        return math.prod(self.out_shape)


@dataclass
class Tape:
    """What a block's backward needs from its forward."""

    x: np.ndarray
    y: np.ndarray
    idx: np.ndarray | None = None  # max-pool winners
    a: np.ndarray | None = None  # pre-pool activations, only behind avg/global pools


def from_graph(graph: Graph) -> list[Block]:
    """Split a chain-shaped float Graph into blocks; anything else is an ``EdgekitError``."""
    graph.validate()
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise EdgekitError("finetune trains graphs with one input and one output")
    blocks: list[Block] = []
    current = graph.inputs[0]
    for node in graph.nodes:
        where = f"node {node.name or node.outputs[0]!r} ({node.op})"
        if node.inputs[0] != current or any(i not in graph.params for i in node.inputs[1:]):
            raise EdgekitError(f"finetune trains sequential graphs only; {where} branches off")
        if any(graph.tensors[t].dtype != "float32" for t in node.inputs + node.outputs):
            raise EdgekitError(f"finetune trains float graphs; {where} is not float32 "
                               "(fine-tune the float model, then quantize it again)")
        current = node.outputs[0]
        shape = graph.tensors[current].shape[1:]
        impl = implementation(node.op, "learn")
        if impl is None:
            why = OPS[node.op].reasons.get("learn", "no learning rule is declared for it")
            raise EdgekitError(f"finetune cannot train through {where}: {why}")
        impl.fn(blocks, graph, node, where)
        if blocks and not impl.options.get("keeps_block_shape"):
            blocks[-1].out_shape = shape
    if not blocks or blocks[-1].op != "linear" or blocks[-1].act or blocks[-1].pool:
        raise EdgekitError("finetune needs a graph ending in a linear classifier (logits)")
    return blocks


def add_dense(blocks: list[Block], graph: Graph, node, where: str) -> None:
    """A conv2d (groups 1) or linear node starts a new block with its weight and bias."""
    a, shape = node.attrs, graph.tensors[node.outputs[0]].shape[1:]
    if node.op == "conv2d" and a["groups"] != 1:
        raise EdgekitError(f"finetune trains convolutions with groups=1; {where} has "
                           f"groups={a['groups']}")
    weight = np.ascontiguousarray(graph.params[node.inputs[1]], np.float32).copy()
    bias_name = node.inputs[2] if len(node.inputs) > 2 else None
    bias = (graph.params[bias_name].astype(np.float32) if bias_name
            else np.zeros(weight.shape[0], np.float32))
    in_shape = graph.tensors[node.inputs[0]].shape[1:]
    if node.op == "linear":
        in_shape = (math.prod(in_shape),)
    extra = {}
    if node.op == "conv2d":
        extra = dict(stride=tuple(a["stride"]), padding=tuple(a["padding"][:2]),
                     dilation=tuple(a["dilation"]))
    blocks.append(Block(node.name or node.outputs[0], node.op, weight, bias, node.inputs[1],
                        bias_name, in_shape, shape, shape, fused=a["activation"],
                        act=K.ACT_CODES[a["activation"]], **extra))


def last_block(blocks: list[Block], where: str) -> Block:
    """The block a pointwise op or pool joins."""
    if not blocks:
        raise EdgekitError(f"finetune needs a conv2d or linear layer first; {where}")
    return blocks[-1]


def add_activation(blocks: list[Block], op: str, alpha: float, where: str) -> None:
    """The last block applies activation ``op`` (slope ``alpha`` below zero for leaky_relu)."""
    block = last_block(blocks, where)
    if block.act or block.pool:
        raise EdgekitError(f"finetune supports one activation per layer, before any pool; {where}")
    block.act, block.alpha = K.ACT_CODES[op], float(alpha)


def add_pointwise(blocks: list[Block], activation: Pointwise, where: str) -> None:
    """The last block applies a pointwise op's ``activation`` (checked as any activation)."""
    add_activation(blocks, "none", 0.0, where)
    blocks[-1].act, blocks[-1].pointwise = POINTWISE, activation


def add_pool(blocks: list[Block], op: str, a: dict, where: str) -> None:
    """The last block, a conv, pools its output with pool op ``op`` of attributes ``a``."""
    block = last_block(blocks, where)
    if block.pool or block.op != "conv2d":
        raise EdgekitError(f"finetune supports one pool per conv layer; {where}")
    if op == "global_avgpool":
        block.pool = Pool("global")
        return
    if list(a.get("dilation", [1, 1])) != [1, 1] or a["padding"][:2] != a["padding"][2:]:
        raise EdgekitError(f"finetune supports pools without dilation and with even padding; "
                           f"{where}")
    block.pool = Pool("max" if op == "maxpool2d" else "avg", tuple(a["kernel"]),
                      tuple(a["stride"]), tuple(a["padding"][:2]),
                      bool(a.get("count_include_pad", True)))


def to_graph(graph: Graph, blocks: list[Block]) -> Graph:
    """A copy of ``graph`` carrying the blocks' current weights (ready to quantize or save)."""
    params = dict(graph.params)
    for block in blocks:
        w, b = block.kernel_weights()
        params[block.weight_name] = w.copy()
        if block.bias_name:
            params[block.bias_name] = b.copy()
    return Graph(list(graph.inputs), list(graph.outputs), dict(graph.tensors), list(graph.nodes),
                 params, dict(graph.metadata))


def forward(block: Block, x: np.ndarray, keep: bool = True) -> tuple[np.ndarray, Tape | None]:
    """The block's output for a batch, and the tape for ``backward`` when ``keep``."""
    batch = x.shape[0]
    x = np.ascontiguousarray(x, np.float32).reshape(batch, *block.in_shape)
    w, b = block.kernel_weights()
    bounds = _BOUNDS["none" if block.norm else block.fused]
    record = block.norm if keep and block.norm else None
    if block.op == "linear":
        y = np.empty((batch, *block.z_shape), np.float32)
        linear.gemm_nt(x, w, b, False, *bounds, y)
        _activate(block, y, y.T, record)
        return y, Tape(x, y) if keep else None
    o, oh, ow = block.z_shape
    w2 = w.reshape(o, -1)
    rows = np.empty((1, oh * ow, w2.shape[1]), np.float32)
    z = np.empty((o, oh, ow), np.float32)
    y = np.empty((batch, *block.out_shape), np.float32)
    p = block.pool
    idx = np.empty(y.shape if keep else (1, *y.shape[1:]), np.uint8) if (
        p and p.kind == "max") else None
    a = np.empty((batch, *block.z_shape), np.float32) if (
        keep and p and p.kind != "max" and block.act) else None
    for n in range(batch):
        conv.im2row(x[n], block.weight.shape[2:], block.stride, block.padding, block.dilation,
                    ow, rows)
        linear.gemm_nt(w2, rows[0], b, True, *bounds, z.reshape(o, -1))
        _activate(block, z, z.reshape(o, -1), record)
        if a is not None:
            a[n] = z
        if p is None:
            y[n] = z
        elif p.kind == "max":
            K.maxpool_argmax(z, p.kernel, p.stride, p.padding, y[n], idx[n if keep else 0])
        elif p.kind == "avg":
            pool.avg_pool2d(z[None], p.kernel, p.stride, p.padding, p.count_include_pad,
                            y[n][None])
        else:
            pool.row_mean(z.reshape(o, -1), y[n].reshape(-1))
    return y, Tape(x, y, idx, a) if keep else None


def _activate(block: Block, out: np.ndarray, channels_by_row: np.ndarray,
              record: Norm | None) -> None:
    """After the product: note the moments for the norm, then apply the activation.

    Without a norm the relu/relu6 clamp is fused into the product; with one, the moments must
    see the pre-activations, so the clamp comes here."""
    if record is not None:
        K.moments_acc(channels_by_row, record.sums)
        record.count += channels_by_row.shape[1]
    flat = out.reshape(-1)
    if block.pointwise:
        block.pointwise.forward(flat, flat)
    elif block.act == K.ACT_CODES["leaky_relu"]:
        elementwise.leaky_relu(flat, np.float32(block.alpha), flat)
    elif block.norm and block.fused != "none":
        elementwise.clamp(flat, *_BOUNDS[block.fused], flat)


def _act_grad(block: Block, y: np.ndarray, dy: np.ndarray, out: np.ndarray) -> None:
    """``out = dy * f'`` of the block's activation, f' read from its output ``y`` (flat)."""
    if block.pointwise:
        block.pointwise.backward(y, dy, out)
    else:
        K.act_grad(y, dy, block.act, block.alpha, out)


def zero_grads(block: Block) -> None:
    """Give the block gradient buffers (kept between steps) and clear them."""
    for name, value in block.params.items():
        block.grads.setdefault(name, np.zeros_like(value))[...] = 0.0


def backward(block: Block, tape: Tape, dy: np.ndarray | Callable[[int], np.ndarray],
             need_dx: bool) -> np.ndarray | None:
    """Accumulate the weight gradients of ``dy`` (dL/d output) into ``block.grads`` (when the
    block is trainable) and return dL/d input when ``need_dx``.

    ``dy`` may be a function of the sample index instead of an array: a local rule then makes
    each sample's error just when it is consumed and never holds a batch of them."""
    batch = tape.x.shape[0]
    if callable(dy):
        per_sample, dy = dy, None
        if block.op == "linear":  # a batch product: gather the samples' errors
            dy = np.empty((batch, *block.out_shape), np.float32)
            for n in range(batch):
                dy[n] = per_sample(n).reshape(block.out_shape)
    else:
        dy = dy.reshape(batch, *block.out_shape)
        per_sample = dy.__getitem__
    dw = block.grads.get(block.weight_name)
    db = block.grads.get(block.bias_name) if block.bias_name else None
    dx = np.zeros((batch, *block.in_shape), np.float32) if need_dx else None
    if block.op == "linear":
        dz = np.empty_like(dy)
        _act_grad(block, tape.y.reshape(-1), dy.reshape(-1), dz.reshape(-1))
        if dw is not None:
            K.matmul_acc(dz.T, tape.x, dw)
            if db is not None:
                K.row_sum_acc(dz.T, db)
        if dx is not None:
            K.matmul_acc(dz, block.kernel_weights()[0], dx)
        return dx
    o, oh, ow = block.z_shape
    w2 = block.kernel_weights()[0].reshape(o, -1)
    rows = np.empty((1, oh * ow, w2.shape[1]), np.float32)
    dz = np.empty(block.z_shape, np.float32)
    dpool = np.empty(block.out_shape, np.float32)
    drows = np.empty((oh * ow, w2.shape[1]), np.float32) if need_dx else None
    for n in range(batch):
        _to_dz(block, tape, n, per_sample(n).reshape(block.out_shape), dpool, dz)
        dz2 = dz.reshape(o, -1)
        if dw is not None:
            conv.im2row(tape.x[n], block.weight.shape[2:], block.stride, block.padding,
                        block.dilation, ow, rows)
            K.matmul_acc(dz2, rows[0], dw.reshape(o, -1))
            if db is not None:
                K.row_sum_acc(dz2, db)
        if dx is not None:
            drows[...] = 0.0
            K.matmul_acc(dz2.T, w2, drows)
            K.row2im(drows, block.weight.shape[2:], block.stride, block.padding,
                     block.dilation, ow, dx[n])
    return dx


def _to_dz(block: Block, tape: Tape, n: int, dy, dpool, dz) -> None:
    """dL/d pre-activation of sample ``n`` from dL/d block output."""
    p = block.pool
    if p is None:
        _act_grad(block, tape.y[n].reshape(-1), dy.reshape(-1), dz.reshape(-1))
        return
    if p.kind == "max":
        _act_grad(block, tape.y[n].reshape(-1), dy.reshape(-1), dpool.reshape(-1))
        K.maxpool_backward(dpool, tape.idx[n], p.kernel, p.stride, p.padding, dz)
        return
    if p.kind == "avg":
        K.avgpool_backward(dy, p.kernel, p.stride, p.padding, p.count_include_pad, dz)
    else:
        dz[...] = dy.reshape(-1, 1, 1) / (dz.shape[1] * dz.shape[2])
    if tape.a is not None:
        _act_grad(block, tape.a[n].reshape(-1), dz.reshape(-1), dz.reshape(-1))
