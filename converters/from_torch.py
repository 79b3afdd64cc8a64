"""Import a PyTorch model into the Graph through ``torch.export``.

``torch.export`` gives one flat, functional ATen graph whatever Python the model's ``forward``
runs, with every weight lifted into a placeholder; we walk it once and translate each call
through the lowering each op module registers for its ATen names (composites in
``_TORCH_OPS``). Calls whose inputs are all constants
(weight transposes, buffer arithmetic) are evaluated at import time instead. Both the
training-IR graph that ``torch.export.export`` returns and its core-ATen decomposition
(``run_decompositions()``) are understood, so a ``.pt2`` file saved either way imports.

The walk never stops at the first problem: an unsupported call is recorded and replaced by a
stand-in input of the shape torch recorded, so one ``UnsupportedOpsError`` names them all.

torch is imported inside the functions only: ``import edgekit.converters.from_torch`` must stay
cheap on machines that never read a torch model. The helpers above ``from_torch`` are
framework-free and shared with ``from_onnx``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError, UnsupportedOpsError
from edgekit.graph import Graph
from edgekit.ops import implementations

from .builder import GraphBuilder

# --------------------------------------------------------------------------- shared helpers


@dataclass(frozen=True)
class Act:
    """An activation tensor of the Graph being built; any other value in an importer's
    environment is a constant known at import time (numpy array, torch tensor, scalar)."""

    name: str


class Unsupported(Exception):
    """Raised by a lowering when this use of an op has no Graph equivalent (e.g. ceil_mode)."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


class Importer:
    """What both importers share: the builder and the collection of every problem found, so
    the user gets all unsupported ops in one message instead of one per attempt."""

    def __init__(self, source: str):
        self.source = source
        self.b = GraphBuilder({"source": source})
        self.unsupported: list[tuple[str, str]] = []
        self.errors: list[str] = []

    def attempt(self, op: str, where: str, lower: Callable[[], Any] | None,
                stand_in: Callable[[], Any]) -> Any:
        """Run one lowering; on failure record why and return a stand-in so the walk goes on."""
        try:
            if lower is None:
                raise Unsupported(op)
            return lower()
        except Unsupported as err:
            self.unsupported.append((err.what, where))
        except EdgekitError as err:
            self.errors.append(f"{where} ({op}): {err}")
        except Exception:
            if not (self.unsupported or self.errors):
                raise  # a bug here, not a consequence of an earlier failure: show it
        return stand_in()

    def finish(self) -> Graph:
        if self.unsupported:
            raise UnsupportedOpsError(self.source, self.unsupported)
        if self.errors:
            more = f" (and {len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
            raise EdgekitError(f"cannot import the {self.source} model: {self.errors[0]}{more}")
        return self.b.build()


def const_param(b: GraphBuilder, value: Any, hint: str) -> Act:
    """A constant operand as a param; scalars become shape (1,) so they broadcast anywhere."""
    arr = np.asarray(value, np.float32)
    return Act(b.param(arr.reshape(1) if arr.ndim == 0 else arr, hint))


def same_pads(sizes, kernel, stride, dilation, lower: bool = False) -> list[int]:
    """'same' padding as [begins..., ends...]; the odd extra goes at the end (torch 'same',
    ONNX SAME_UPPER) or at the beginning (ONNX SAME_LOWER)."""
    begins, ends = [], []
    for n, k, s, d in zip(sizes, kernel, stride, dilation, strict=True):
        total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
        small = total // 2
        begins.append(total - small if lower else small)
        ends.append(small if lower else total - small)
    return begins + ends


# --------------------------------------------------------------------------- the importer


def from_torch(model: Any, example_inputs: Any = None) -> Graph:
    """Lower an ``nn.Module`` (traced with ``example_inputs``: a tensor or a tuple of them)
    or a ``torch.export.ExportedProgram`` (e.g. from ``torch.export.load``) to a Graph.

    Batch norm is folded into the conv/linear before it and ReLU/ReLU6 fused into their
    producer. Raises ``UnsupportedOpsError`` naming every call that has no Graph op, and
    ``EdgekitError`` when ``torch.export`` cannot capture the model.
    """
    import torch

    if isinstance(model, torch.export.ExportedProgram):
        program = model
    elif isinstance(model, torch.nn.Module):
        program = _export(model, example_inputs)
    else:
        raise EdgekitError(f"from_torch takes an nn.Module or a torch.export.ExportedProgram, "
                           f"got {type(model).__name__}")
    return _TorchImporter(_functional(program)).run()


def _export(module, example_inputs):
    """``torch.export`` in eval mode (restoring each submodule's mode afterwards)."""
    import torch

    if example_inputs is None:
        raise EdgekitError("from_torch(module) needs example_inputs (a tensor or a tuple of "
                           "tensors shaped like one real input batch)")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        return torch.export.export(module, tuple(example_inputs))
    except Exception as err:  # torch raises many types; users need the gist, not the trace
        raise EdgekitError(
            f"torch.export could not capture {type(module).__name__}: {_gist(err)}\n"
            "Make forward() traceable (no data-dependent Python control flow, tensors in and "
            "out) or export it yourself and pass the ExportedProgram.") from None
    finally:
        for m, training in modes.items():
            m.training = training


def _functional(program):
    """``program`` without in-place calls. ``torch.export``'s default IR keeps them as the
    model's modules made them (``relu_``, ``add_``, ``hardtanh_``, ``hardswish_``,
    ``dropout_``: torchvision's ``inplace=True`` layers and ``out += identity``); functionalizing
    with an empty decomposition table turns each into its out-of-place op, with the aliasing
    resolved by torch itself, and decomposes nothing else (conv2d, linear, hardswish stay;
    batch_norm and dropout take their functional inference forms, which the walk reads)."""
    if not any(getattr(getattr(node.target, "_schema", None), "is_mutable", False)
               for node in program.graph.nodes if node.op == "call_function"):
        return program
    try:
        return program.run_decompositions({})
    except Exception as err:  # torch raises many types; users need the gist, not the trace
        raise EdgekitError(f"torch could not functionalize the program's in-place ops: "
                           f"{_gist(err)}") from None


def _gist(err: Exception, lines: int = 3, chars: int = 500) -> str:
    text = [ln.strip() for ln in str(err).splitlines() if ln.strip()][:lines]
    gist = " / ".join(text) or type(err).__name__
    return gist if len(gist) <= chars else gist[:chars] + "..."


@dataclass
class _Call:
    """What a lowering sees besides its ATen arguments: the builder, the Graph node name and
    the fx node (for the shapes torch recorded)."""

    b: GraphBuilder
    name: str
    node: Any

    def shape(self, value: Any) -> tuple:
        return tuple(value.meta["val"].shape)

    @property
    def aten(self) -> str:
        """The ATen op this call is (one lowering may serve several, e.g. max_pool2d and
        max_pool2d_with_indices)."""
        return _op_name(self.node.target)

    def emit(self, op: str, inputs: list[Act], attrs: dict[str, Any] | None = None) -> Act:
        """Append Graph op ``op`` on ``inputs``, named after this call."""
        return Act(self.b.node(op, [x.name for x in inputs], attrs, name=self.name))

    def param(self, value: Any, suffix: str) -> Act:
        """Constant ``value`` as a param of the Graph, named after this call."""
        return const_param(self.b, value, f"{self.name}.{suffix}")

    def const(self, value: Any, what: str) -> np.ndarray | None:
        """A weight argument as a numpy array (None stays None); ``what`` names the op when
        it is an activation instead (unsupported)."""
        if isinstance(value, Act):
            raise Unsupported(f"{what} with a non-constant weight")
        return _np(value)


class _TorchImporter(Importer):
    def __init__(self, program):
        super().__init__("PyTorch")
        self.ep = program
        sig = program.graph_signature
        self.lifted = {**sig.inputs_to_parameters, **sig.inputs_to_buffers,
                       **sig.inputs_to_lifted_tensor_constants}
        self.env: dict[str, Any] = {}

    def run(self) -> Graph:
        for node in self.ep.graph.nodes:
            getattr(self, f"_{node.op}")(node)
        return self.finish()

    def _placeholder(self, node) -> None:
        if node.name in self.lifted:
            fqn = self.lifted[node.name]
            value = self.ep.state_dict.get(fqn)
            self.env[node.name] = (self.ep.constants[fqn] if value is None else value).detach()
            return
        val = node.meta.get("val")
        if not hasattr(val, "shape"):
            raise EdgekitError(f"input {node.name!r} is not a tensor ({type(val).__name__}); "
                               "edgekit graphs take tensor inputs only")
        dims = list(val.shape)
        if not all(isinstance(d, int) for d in dims[1:]):
            raise EdgekitError(f"input {node.name!r} has shape {dims}: only the batch "
                               "(first) dimension may be dynamic")
        indices = str(val.dtype) in ("torch.int32", "torch.int64")  # into an embedding's table
        self.env[node.name] = Act(self.b.input(node.name, (1, *dims[1:]),
                                               "int32" if indices else "float32"))

    def _get_attr(self, node) -> None:
        value = self.ep.graph_module
        for part in node.target.split("."):
            value = getattr(value, part)
        self.env[node.name] = value

    def _call_function(self, node) -> None:
        import torch

        args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), lambda n: self.env[n.name])
        if not _has_act((args, kwargs)):
            try:
                self.env[node.name] = node.target(*args, **kwargs)
                return
            except Exception:  # not evaluable here (e.g. symbolic sizes): lower it instead
                pass
        op = _op_name(node.target)
        fn = _lowering(op)
        call = _Call(self.b, _where(node), node)
        self.env[node.name] = self.attempt(
            op, call.name, fn and (lambda: fn(call, *args, **kwargs)),
            lambda: self._stand_in(node.meta.get("val"), call.name))

    def _stand_in(self, val, name):
        """An input of the shape torch recorded, so the nodes after a failed one still lower."""
        if isinstance(val, (tuple, list)):
            return tuple(self._stand_in(v, name) for v in val)
        if not hasattr(val, "shape") or val.dim() == 0:
            return None
        dims = [d if isinstance(d, int) else 1 for d in val.shape[1:]]  # data-dependent: any
        return Act(self.b.input(f"{name}.unsupported", (1, *dims)))

    def _output(self, node) -> None:
        from torch.export.graph_signature import OutputKind

        for arg, spec in zip(node.args[0], self.ep.graph_signature.output_specs,
                             strict=True):
            if spec.kind != OutputKind.USER_OUTPUT:
                continue
            value = self.env.get(getattr(arg, "name", None))
            if not isinstance(value, Act):
                if not (self.unsupported or self.errors):
                    raise EdgekitError(f"model output {arg} is not computed from the inputs; "
                                       "every output must depend on an input")
                continue
            self.b.output(value.name)


def _op_name(target) -> str:
    """'conv2d' for aten.conv2d.padding, 'getitem' for operator.getitem, 'cond' for HOPs."""
    return getattr(target, "__name__", str(target)).split(".")[0]


def _where(node) -> str:
    """The innermost module path (e.g. 'features.0'), else the fx node name."""
    stack = node.meta.get("nn_module_stack") or {}
    paths = [path for path, _ in stack.values() if path]
    return paths[-1] if paths else node.name


def _has_act(value) -> bool:
    if isinstance(value, Act):
        return True
    if isinstance(value, (list, tuple)):
        return any(_has_act(v) for v in value)
    if isinstance(value, dict):
        return any(_has_act(v) for v in value.values())
    return False


def _np(value):
    return None if value is None else value.detach().cpu().numpy()


def ints(value, n: int) -> list[int]:
    """An int or a list of ints (length 1 or n) as n ints: ATen shortens repeated values."""
    values = [int(value)] if isinstance(value, int) else [int(v) for v in value]
    return values * n if len(values) == 1 else values


# --------------------------------------------------------------------------- ATen lowerings


def _convolution(c, x, weight, bias, stride, padding, dilation, transposed, output_padding,
                 groups):
    """core ATen aten.convolution (what conv layers decompose to): aten.conv1d or aten.conv2d,
    or aten.conv_transpose1d/2d when ``transposed``, by the weight's rank, with the same
    arguments."""
    kind = "conv_transpose" if transposed else "conv"
    op = f"{kind}{len(c.shape(c.node.args[1])) - 2}d"
    lower = _lowering(op)
    if lower is None:
        raise Unsupported(op)
    if transposed:
        return lower(c, x, weight, bias, stride, padding, output_padding, groups, dilation)
    return lower(c, x, weight, bias, stride, padding, dilation, groups)


def _batch_norm(c, x, weight, bias, mean, var, training, momentum, eps, cudnn=None):
    if training:
        raise Unsupported("batch_norm in training mode (export after model.eval())")
    return _bn_inference(c, x, weight, bias, mean, var, momentum, eps)


def _bn_inference(c, x, weight, bias, mean, var, momentum, eps):
    mean, var = _np(mean), _np(var)
    gamma = np.ones_like(mean) if weight is None else _np(weight)
    beta = np.zeros_like(mean) if bias is None else _np(bias)
    return Act(c.b.batchnorm(x.name, mean, var, gamma, beta, float(eps), c.name))


def _bn_no_training(c, *args):
    """core ATen batch norm returns (out, save_mean, save_invstd); only out is ever read."""
    return _bn_inference(c, *args), None, None


def _glu(c, x, dim=-1):
    """GLU has no Graph op: ``a * sigmoid(b)``, a and b the first and second halves of x along
    ``dim`` (two slices), exactly."""
    shape = c.b.shape(x.name)
    axis = int(dim) % len(shape)
    if axis == 0:
        raise Unsupported("glu across the batch dimension")
    half = shape[axis] // 2

    def part(start: int) -> Act:
        starts, stops = [0] * (len(shape) - 1), list(shape[1:])
        starts[axis - 1], stops[axis - 1] = start, start + half
        return c.emit("slice", [x], {"starts": starts, "stops": stops,
                                     "steps": [1] * (len(shape) - 1)})

    a, b = part(0), part(half)
    return c.emit("mul", [a, c.emit("sigmoid", [b])])


def _alias(c, x, *_, **__):
    return x


def _nothing(c, *_, **__):
    return None


def _expand(c, x, *_, **__):
    """expand to the shape x has already: core ATen's matmul decomposition spells each operand
    so before its bmm; a real broadcast has no Graph op."""
    if tuple(c.shape(c.node)) != tuple(c.shape(c.node.args[0])):
        raise Unsupported("expand to a larger shape")
    return x


def _lowering(aten: str) -> Callable[..., Any] | None:
    """The lowering of ATen op ``aten``: an op module's (``names`` it registered for "torch"),
    else one of the composites below."""
    for impl in implementations("torch").values():
        if aten in impl.options["names"]:
            return impl.fn
    return _TORCH_OPS.get(aten)


# Composite ATen ops (no Graph op of their own) and ops not yet moved into an op module.
_TORCH_OPS: dict[str, Callable[..., Any]] = {
    "convolution": _convolution,
    "batch_norm": _batch_norm, "_native_batch_norm_legit_no_training": _bn_no_training,
    **dict.fromkeys(("_native_batch_norm_legit_functional", "_native_batch_norm_legit"),
                    lambda c, x, w, b, mean, var, *a: _batch_norm(c, x, w, b, mean, var, True,
                                                                  0, 0)),
    **dict.fromkeys(("dropout", "feature_dropout", "alias", "clone", "contiguous", "detach",
                     "lift_fresh_copy"), _alias),
    "glu": _glu,
    "expand": _expand,
    "native_dropout": lambda c, x, *_: (x, None),
    "getitem": lambda c, seq, i: seq[i],
    "sym_size": lambda c, *_: c.node.meta["val"],
    **dict.fromkeys(("_assert_tensor_metadata", "_assert_scalar", "sym_constrain_range_for_size",
                     "_assert_async"), _nothing),
}
