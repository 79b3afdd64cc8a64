"""A float Graph seen as training blocks: conv2d (any groups) or linear, one activation, one pool;
or a *unit* of several such layers that trains as one block.

A block is what every local rule trains on its own (LLS's conv → BN → leaky ReLU → pool, with
BN folded into the conv at import, or stood in for by ``edgekit.learn.norm``), and what
backprop chains. Two shapes make units (``Unit``), as the LLS reference code builds its
MobileNet: a residual region (two chains from one tensor joined by ``add``, then the join's
activation and pool) and a depthwise-separable pair (a grouped conv and the layer after it,
the reference's ``ConvDWBlock``): a depthwise conv mixes no channels, so a local loss right
after it could only rescale them.

``forward`` keeps (in a ``Tape``) only what ``backward`` needs: the block input (for the weight
gradient), the block output, and, behind a max pool, the winning taps as uint8 — pre-pool maps
only where the derivative needs them (behind an average pool, or an activation whose output
does not determine its input: hardswish, gelu, silu). Conv blocks run one sample at a time
through one-sample scratch, so the batch never holds im2row rows.
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
    ``backward(v, dy, out)``: ``dy * f'`` with f' read from the activation's output ``v`` or,
    when ``from_input``, from its input (then the tape keeps the pre-activations)."""

    forward: Callable[[np.ndarray, np.ndarray], None]
    backward: Callable[[np.ndarray, np.ndarray, np.ndarray], None]
    from_input: bool = False


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
    groups: int = 1
    pool: Pool | None = None
    trainable: bool = True
    norm: Norm | None = None
    grads: dict[str, np.ndarray] = field(default_factory=dict)
    output: str = ""  # the Graph tensor the block ends at (an exit's head reads it)

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

    def layers(self) -> list[Block]:
        return [self]


class Unit:
    """Layers that train as one block: the chain ``body``, and with ``shortcut`` (a chain, or
    ``[]`` for the identity) ``act(body(x) + shortcut(x))`` then a pool (a residual block);
    without it (``None``) the body's output as it is (a depthwise-separable pair)."""

    op = "unit"
    norm = None
    weight_name = bias_name = None

    def __init__(self, name: str, body: list[Block], shortcut: list[Block] | None,
                 z_shape: tuple[int, ...], fused: str = "none"):
        self.name, self.body, self.shortcut = name, body, shortcut
        self.in_shape, self.z_shape = body[0].in_shape, z_shape
        self.out_shape = body[-1].out_shape if shortcut is None else z_shape
        self.fused, self.act, self.alpha = fused, K.ACT_CODES[fused], 0.0
        self.pointwise: Pointwise | None = None
        self.pool: Pool | None = None
        self.output = body[-1].output

    def layers(self) -> list[Block]:
        return [*self.body, *(self.shortcut or [])]

    @property
    def trainable(self) -> bool:
        return self.body[0].trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        for layer in self.layers():
            layer.trainable = value

    @property
    def params(self) -> dict[str, np.ndarray]:
        return {k: v for layer in self.layers() for k, v in layer.params.items()}

    @property
    def grads(self) -> dict[str, np.ndarray]:
        return {k: v for layer in self.layers() for k, v in layer.grads.items()}

    @property
    def out_size(self) -> int:
        return math.prod(self.out_shape)


def dense_layers(blocks: list) -> list[Block]:
    """Every dense layer, units opened: what holds weights, gradients and norms."""
    return [layer for b in blocks for layer in b.layers()]


@dataclass
class Tape:
    """What a block's backward needs from its forward."""

    x: np.ndarray
    y: np.ndarray
    idx: np.ndarray | None = None  # max-pool winners
    a: np.ndarray | None = None  # the pre-pool map the derivative reads (``keeps_pre_pool``)
    inner: list | None = None  # a unit's: its body's tapes, then its shortcut's


def keeps_pre_pool(block) -> bool:
    """Whether the tape keeps the pre-pool map: the pre-activations where the derivative needs
    the activation's input, the activations behind an average pool (the pooled output no
    longer gives them)."""
    from_input = block.pointwise is not None and block.pointwise.from_input
    return from_input or bool(block.pool and block.pool.kind != "max" and block.act)


BRANCHES = ("finetune trains chains of layers and residual blocks (two chains from one tensor "
            "joined by add)")


def from_graph(graph: Graph) -> list:
    """Split a float Graph of chains and residual blocks into blocks (``Block`` or ``Unit``);
    anything else is an ``EdgekitError`` naming the node."""
    graph.validate()
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise EdgekitError("finetune trains graphs with one input and one output")
    readers: dict[str, int] = {}
    for node in graph.nodes:
        for name in node.inputs:
            readers[name] = readers.get(name, 0) + 1
    blocks: list = []
    current, i = graph.inputs[0], 0
    while i < len(graph.nodes):
        if readers.get(current, 0) > 1:
            i, current = _residual(graph, i, current, blocks)
        else:
            current = _join(graph, graph.nodes[i], current, blocks)
            i += 1
    if not blocks or blocks[-1].op != "linear" or blocks[-1].act or blocks[-1].pool:
        raise EdgekitError("finetune needs a graph ending in a linear classifier (logits)")
    return _separable_units(blocks)


def _where(node) -> str:
    return f"node {node.name or node.outputs[0]!r} ({node.op})"


def _join(graph: Graph, node, current: str, blocks: list) -> str:
    """Add ``node`` (reading ``current``) to the chain ``blocks``; returns its output."""
    where = _where(node)
    if node.inputs[0] != current or any(i not in graph.params for i in node.inputs[1:]):
        raise EdgekitError(f"{BRANCHES}; {where} branches off")
    if any(graph.tensors[t].dtype != "float32" for t in node.inputs + node.outputs):
        raise EdgekitError(f"finetune trains float graphs; {where} is not float32 "
                           "(fine-tune the float model, then quantize it again)")
    impl = implementation(node.op, "learn")
    if impl is None:
        why = OPS[node.op].reasons.get("learn", "no learning rule is declared for it")
        raise EdgekitError(f"finetune cannot train through {where}: {why}")
    impl.fn(blocks, graph, node, where)
    if blocks and not impl.options.get("keeps_block_shape"):
        blocks[-1].out_shape = graph.tensors[node.outputs[0]].shape[1:]
    if blocks:
        blocks[-1].output = node.outputs[0]
    return node.outputs[0]


def _residual(graph: Graph, start: int, fork: str, blocks: list) -> tuple[int, str]:
    """The residual block of the nodes from ``start``, where ``fork`` is read twice: two chains
    from ``fork`` up to the ``add`` that joins them become one ``Unit``. Returns the index of
    the node after the add and the add's output."""
    nodes, producer, reach = graph.nodes, {}, {fork}
    for j in range(start, len(nodes)):
        node = nodes[j]
        if node.op == "add" and len(node.inputs) == 2 and set(node.inputs) <= reach:
            break
        if node.inputs[0] not in reach:
            raise EdgekitError(f"{BRANCHES}; {_where(node)} branches off")
        if any(i not in graph.params for i in node.inputs[1:]):
            raise EdgekitError(f"{BRANCHES}; {_where(node)} joins two branches otherwise (a "
                               "gate or a concat)")
        producer[node.outputs[0]] = node
        reach.add(node.outputs[0])
    else:
        raise EdgekitError(f"{BRANCHES}; {fork!r} branches off and no add joins it")
    chains = []
    for tensor in node.inputs:
        chain = []
        while tensor != fork:
            chain.insert(0, producer[tensor])
            tensor = producer[tensor].inputs[0]
        chains.append(chain)
    if len(chains[0]) + len(chains[1]) != j - start or not (chains[0] or chains[1]):
        raise EdgekitError(f"{BRANCHES}; the branches from {fork!r} to {_where(node)} are not "
                           "two chains")
    if node.attrs.get("activation", "none") not in K.ACT_CODES:
        raise EdgekitError(f"finetune cannot train through {_where(node)}: activation "
                           f"{node.attrs['activation']!r}")
    body, shortcut = sorted(chains, key=len, reverse=True)
    parts = []
    for chain in (body, shortcut):
        part, current = [], fork
        for n in chain:
            current = _join(graph, n, current, part)
        parts.append(part)
    blocks.append(Unit(parts[0][0].name, parts[0], parts[1],
                       graph.tensors[node.outputs[0]].shape[1:],
                       node.attrs.get("activation", "none")))
    blocks[-1].output = node.outputs[0]
    return j + 1, node.outputs[0]


def _separable_units(blocks: list) -> list:
    """A grouped (depthwise) conv and the hidden layer after it become one unit."""
    out: list = []
    for b in blocks:
        prev = out[-1] if out else None
        if (isinstance(prev, Block) and prev.groups != 1 and not prev.pool
                and isinstance(b, Block) and b is not blocks[-1]):
            out[-1] = Unit(prev.name, [prev, b], None, b.z_shape)
        else:
            out.append(b)
    return out


def add_dense(blocks: list[Block], graph: Graph, node, where: str) -> None:
    """A conv2d (any groups) or linear node starts a new block with its weight and bias."""
    a, shape = node.attrs, graph.tensors[node.outputs[0]].shape[1:]
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
                     dilation=tuple(a["dilation"]), groups=a["groups"])
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
    if block.pool or len(block.z_shape) != 3:
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
    for block in dense_layers(blocks):
        w, b = block.kernel_weights()
        params[block.weight_name] = w.copy()
        if block.bias_name:
            params[block.bias_name] = b.copy()
    return Graph(list(graph.inputs), list(graph.outputs), dict(graph.tensors), list(graph.nodes),
                 params, dict(graph.metadata))


def forward(block, x: np.ndarray, keep: bool = True) -> tuple[np.ndarray, Tape | None]:
    """The block's output for a batch, and the tape for ``backward`` when ``keep``."""
    batch = x.shape[0]
    x = np.ascontiguousarray(x, np.float32).reshape(batch, *block.in_shape)
    if isinstance(block, Unit):
        return _unit_forward(block, x, keep)
    w, b = block.kernel_weights()
    bounds = _BOUNDS["none" if block.norm else block.fused]
    record = block.norm if keep and block.norm else None
    if block.op == "linear":
        y = np.empty((batch, *block.z_shape), np.float32)
        linear.gemm_nt(x, w, b, False, *bounds, y)
        a = y.copy() if keep and keeps_pre_pool(block) else None
        _activate(block, y, y.T, record)
        return y, Tape(x, y, a=a) if keep else None
    o, oh, ow = block.z_shape
    w2 = w.reshape(o, -1)
    rows = np.empty((block.groups, oh * ow, w2.shape[1]), np.float32) if block.groups == 1 \
        else None
    z = np.empty((o, oh, ow), np.float32)
    y, idx, a = _outputs(block, batch, keep)
    for n in range(batch):
        if rows is None:
            K.grouped_conv(x[n], w, b, block.stride, block.padding, block.dilation, z)
            elementwise.clamp(z.reshape(-1), *bounds, z.reshape(-1))
        else:
            conv.im2row(x[n], block.weight.shape[2:], block.stride, block.padding,
                        block.dilation, ow, rows)
            linear.gemm_nt(w2, rows[0], b, True, *bounds, z.reshape(o, -1))
        _finish(block, z, record, y[n], idx[n if keep else 0] if idx is not None else None,
                a[n] if a is not None else None)
    return y, Tape(x, y, idx, a) if keep else None


def _outputs(block, batch: int, keep: bool):
    """The block's output batch, and the max-pool winners and pre-pool maps its tape keeps."""
    y = np.empty((batch, *block.out_shape), np.float32)
    p = block.pool
    idx = np.empty(y.shape if keep else (1, *y.shape[1:]), np.uint8) if (
        p and p.kind == "max") else None
    a = np.empty((batch, *block.z_shape), np.float32) if keep and keeps_pre_pool(block) else None
    return y, idx, a


def _finish(block, z: np.ndarray, record: Norm | None, y, idx, a) -> None:
    """One sample's pre-activation map ``z`` (overwritten) → activation → pool → ``y``;
    ``a`` gets the pre-pool map the derivative reads (``keeps_pre_pool``)."""
    from_input = block.pointwise is not None and block.pointwise.from_input
    if a is not None and from_input:
        a[...] = z
    _activate(block, z, z.reshape(len(z), -1), record)
    if a is not None and not from_input:
        a[...] = z
    p = block.pool
    if p is None:
        y[...] = z
    elif p.kind == "max":
        K.maxpool_argmax(z, p.kernel, p.stride, p.padding, y, idx)
    elif p.kind == "avg":
        pool.avg_pool2d(z[None], p.kernel, p.stride, p.padding, p.count_include_pad, y[None])
    else:
        pool.row_mean(z.reshape(len(z), -1), y.reshape(-1))


def _unit_forward(unit: Unit, x: np.ndarray, keep: bool) -> tuple[np.ndarray, Tape | None]:
    tapes, h = [], x
    for layer in unit.body:
        h, tape = forward(layer, h, keep)
        tapes.append(tape)
    if unit.shortcut is None:
        return h, Tape(x, h, inner=tapes) if keep else None
    s = x
    for layer in unit.shortcut:
        s, tape = forward(layer, s, keep)
        tapes.append(tape)
    z = (h.reshape(len(x), *unit.z_shape) + s.reshape(len(x), *unit.z_shape)).astype(np.float32)
    h = s = None
    y, idx, a = _outputs(unit, len(x), keep)
    for n in range(len(x)):
        _finish(unit, z[n], None, y[n], idx[n if keep else 0] if idx is not None else None,
                a[n] if a is not None else None)
    return y, Tape(x, y, idx, a, tapes) if keep else None


def _activate(block, out: np.ndarray, channels_by_row: np.ndarray,
              record: Norm | None) -> None:
    """After the product: note the moments for the norm, then apply the activation.

    Without a norm the relu/relu6 clamp is fused into the product; with one, the moments must
    see the pre-activations, so the clamp comes here (and after a unit's add)."""
    if record is not None:
        K.moments_acc(channels_by_row, record.sums)
        record.count += channels_by_row.shape[1]
    flat = out.reshape(-1)
    if block.pointwise:
        block.pointwise.forward(flat, flat)
    elif block.act == K.ACT_CODES["leaky_relu"]:
        elementwise.leaky_relu(flat, np.float32(block.alpha), flat)
    elif (block.norm or isinstance(block, Unit)) and block.fused != "none":
        elementwise.clamp(flat, *_BOUNDS[block.fused], flat)


def _act_grad(block, v: np.ndarray, dy: np.ndarray, out: np.ndarray) -> None:
    """``out = dy * f'`` of the block's activation, f' read from ``v`` (flat): its output, or
    its input where the tape keeps that."""
    if block.pointwise:
        block.pointwise.backward(v, dy, out)
    else:
        K.act_grad(v, dy, block.act, block.alpha, out)


def zero_grads(block) -> None:
    """Give the block's layers gradient buffers (kept between steps) and clear them."""
    for layer in block.layers():
        for name, value in layer.params.items():
            layer.grads.setdefault(name, np.zeros_like(value))[...] = 0.0


def backward(block, tape: Tape, dy: np.ndarray | Callable[[int], np.ndarray],
             need_dx: bool) -> np.ndarray | None:
    """Accumulate the weight gradients of ``dy`` (dL/d output) into ``block.grads`` (when the
    block is trainable) and return dL/d input when ``need_dx``.

    ``dy`` may be a function of the sample index instead of an array: a local rule then makes
    each sample's error just when it is consumed and never holds a batch of them (a unit, whose
    layers run batch by batch, gathers them)."""
    batch = tape.x.shape[0]
    if callable(dy):
        per_sample, dy = dy, None
        if block.op != "conv2d":  # batch products: gather the samples' errors
            dy = np.empty((batch, *block.out_shape), np.float32)
            for n in range(batch):
                dy[n] = per_sample(n).reshape(block.out_shape)
    else:
        dy = dy.reshape(batch, *block.out_shape)
        per_sample = dy.__getitem__
    if isinstance(block, Unit):
        return _unit_backward(block, tape, dy, need_dx)
    dw = block.grads.get(block.weight_name)
    db = block.grads.get(block.bias_name) if block.bias_name else None
    dx = np.zeros((batch, *block.in_shape), np.float32) if need_dx else None
    if block.op == "linear":
        dz = np.empty_like(dy)
        v = whole(tape.a if tape.a is not None else tape.y)
        _act_grad(block, v.reshape(-1), dy.reshape(-1), dz.reshape(-1))
        if dw is not None and isinstance(tape.x, np.ndarray):
            K.matmul_acc(dz.T, tape.x.reshape(batch, -1), dw)
        elif dw is not None:  # a packed input, read back one sample at a time
            for n in range(batch):
                K.matmul_acc(dz[n:n + 1].T, tape.x[n].reshape(1, -1), dw)
        if dw is not None and db is not None:
            K.row_sum_acc(dz.T, db)
        if dx is not None:
            K.matmul_acc(dz, block.kernel_weights()[0], dx)
        return dx
    o, oh, ow = block.z_shape
    w = block.kernel_weights()[0]
    w2 = w.reshape(o, -1)
    grouped = block.groups != 1
    rows = None if grouped else np.empty((1, oh * ow, w2.shape[1]), np.float32)
    drows = np.empty((oh * ow, w2.shape[1]), np.float32) if need_dx and not grouped else None
    dz = np.empty(block.z_shape, np.float32)
    dpool = np.empty(block.out_shape, np.float32)
    geometry = (block.stride, block.padding, block.dilation)
    for n in range(batch):
        _to_dz(block, tape, n, per_sample(n).reshape(block.out_shape), dpool, dz)
        dz2 = dz.reshape(o, -1)
        if dw is not None:
            if grouped:
                K.grouped_conv_dw(tape.x[n], dz, *geometry, dw)
            else:
                conv.im2row(tape.x[n], block.weight.shape[2:], *geometry, ow, rows)
                K.matmul_acc(dz2, rows[0], dw.reshape(o, -1))
            if db is not None:
                K.row_sum_acc(dz2, db)
        if dx is not None:
            if grouped:
                K.grouped_conv_dx(dz, w, *geometry, dx[n])
            else:
                drows[...] = 0.0
                K.matmul_acc(dz2.T, w2, drows)
                K.row2im(drows, block.weight.shape[2:], *geometry, ow, dx[n])
    return dx


def whole(a) -> np.ndarray:
    """A tape's array in float32: as it is, or unpacked (``edgekit.learn.dual``)."""
    return a if isinstance(a, np.ndarray) else a.full()


def _unit_backward(unit: Unit, tape: Tape, dy: np.ndarray, need_dx: bool) -> np.ndarray | None:
    """Backprop inside the unit: through the join's pool and activation to the add, then
    down both chains (the identity passes the error on as it is)."""
    if unit.shortcut is None:
        return _chain_backward(unit.body, tape.inner, dy, need_dx)
    dz = np.empty((len(dy), *unit.z_shape), np.float32)
    dpool = np.empty(unit.out_shape, np.float32)
    for n in range(len(dy)):
        _to_dz(unit, tape, n, dy[n], dpool, dz[n])
    split = len(unit.body)
    dx = _chain_backward(unit.body, tape.inner[:split], dz, need_dx)
    if need_dx:
        skip = (_chain_backward(unit.shortcut, tape.inner[split:], dz, True)
                if unit.shortcut else dz)
        dx += skip.reshape(dx.shape)
    return dx


def _chain_backward(chain: list[Block], tapes: list[Tape], dy: np.ndarray,
                    need_dx: bool) -> np.ndarray | None:
    for i in range(len(chain) - 1, -1, -1):
        dy = backward(chain[i], tapes[i], dy, need_dx=need_dx or i > 0)
    return dy


def _to_dz(block, tape: Tape, n: int, dy, dpool, dz) -> None:
    """dL/d pre-activation of sample ``n`` from dL/d block output."""
    p = block.pool
    if tape.a is None:  # the derivative reads the output
        if p is None:
            _act_grad(block, tape.y[n].reshape(-1), dy.reshape(-1), dz.reshape(-1))
        elif p.kind == "max":  # monotone: f' at the winner is f' at the pooled output
            _act_grad(block, tape.y[n].reshape(-1), dy.reshape(-1), dpool.reshape(-1))
            K.maxpool_backward(dpool, tape.idx[n], p.kernel, p.stride, p.padding, dz)
        else:
            _unpool(p, dy, dz)
        return
    if p is None:
        dz[...] = dy
    elif p.kind == "max":
        K.maxpool_backward(dy, tape.idx[n], p.kernel, p.stride, p.padding, dz)
    else:
        _unpool(p, dy, dz)
    _act_grad(block, tape.a[n].reshape(-1), dz.reshape(-1), dz.reshape(-1))


def _unpool(p: Pool, dy, dz) -> None:
    """dL/d pool input of an average or global pool."""
    if p.kind == "avg":
        K.avgpool_backward(dy, p.kernel, p.stride, p.padding, p.count_include_pad, dz)
    else:
        dz[...] = dy.reshape(-1, 1, 1) / (dz.shape[1] * dz.shape[2])
