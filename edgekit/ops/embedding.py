"""embedding: the rows of a (V, D) table picked by int32 indices, (N, ...) -> (N, ..., D).

The indices are a graph input of dtype int32 without quantization (``OpDef.indexed``): the
quantizer leaves them alone, and every Session refuses an index outside [0, V) with one error
(``quant.edge``); the kernels clamp one that arrives anyway (raw arrays on the board), so no
backend ever reads outside the table. int8 moves values: the table is quantized per tensor and
the output shares its quantization (TFLite's GATHER on int8). The importers read torch's
``aten.embedding`` (nn.Embedding) and ONNX's Gather of rows of a constant table.
"""

from __future__ import annotations

import numpy as np

from edgekit.ops import declare
from edgekit.ops.schema import OpDef, fail
from edgekit.ops.util import finish


def _shape(s, a):
    indices, table = s
    if len(table) != 2:
        fail(f"embedding's table must be (rows, features), got {table}")
    return (*indices, table[1])


embedding = declare(OpDef(
    "embedding", (2, 2), {}, _shape, quant="all_inputs", indexed=True,
    reference=lambda indices, table: finish(np.asarray(table, np.float64)[indices]),
    doc="rows of a (V, D) table (second input) at int32 indices in [0, V) (first input)"))


# --- edgekit runtime --------------------------------------------------------------------------

@embedding.implements("float32")
def _float32(ins, out):
    from edgekit.runtime.kernels.matmul import gather_rows
    from edgekit.runtime.registry import bind

    indices, table = ins
    return bind(gather_rows, indices.reshape(-1), table, out.reshape(-1, table.shape[1]))


@embedding.implements("int8")
def _int8(ins, out, *, quant):
    """The float32 kernel on int8 rows: table and output share one quantization."""
    from edgekit.runtime.int8 import check_shared

    check_shared("embedding", quant[1:])
    return _float32(ins, out)


# --- importers --------------------------------------------------------------------------------

def _lower(ctx, table, indices, what: str):
    from edgekit.converters.from_torch import Act, Unsupported

    if isinstance(table, Act) or not isinstance(indices, Act):
        raise Unsupported(f"{what} of an activation's rows (only a constant table's, at "
                          "indices computed from the inputs)")
    table = np.asarray(ctx.const(table, what))
    if table.ndim != 2:
        raise Unsupported(f"{what} from a table of rank {table.ndim} (one of (rows, features))")
    return ctx.emit("embedding", [indices, ctx.param(table, "weight")])


@embedding.implements("torch", names=("embedding",))
def _torch(c, weight, indices, *_, **__):
    """aten.embedding(weight, indices, padding_idx, scale_grad_by_freq, sparse): the options
    change training only."""
    return _lower(c, weight, indices, "embedding")


@embedding.implements("onnx_import", names=("Gather",))
def _onnx_import(n, data, indices):
    from edgekit.converters.from_torch import Unsupported

    if n.get("axis", 0) != 0:
        raise Unsupported(f"Gather(axis={n.get('axis')}) (rows of a table only: axis 0)")
    return _lower(n, data, indices, "Gather")


# --- writers ----------------------------------------------------------------------------------

@embedding.implements("tflite")
def _tflite(w, node):
    """GATHER along the table's axis 0."""
    from edgekit.converters.to_tflite import identity

    indices, table = node.inputs
    rank = len(w.graph.tensors[indices].shape)
    w.op("GATHER", [w.value(table, identity(2)), w.value(indices, identity(rank))],
         [w.output(node, identity(rank + 1))], w.options("Gather", axis=0, batchDims=0))


@embedding.implements("onnx")
def _onnx(e, node, ins):
    return e.add("Gather", [ins[1], ins[0]], axis=0)


@embedding.implements("c")
def _c(w, i, node):
    """``ek_gather_rows``: the int32 indices read from the arena, the table from flash."""
    indices, table = node.inputs
    rows, features = w.graph.tensors[table].shape
    source = (w.array("int8_t", w.graph.params[table]) if table in w.graph.params
              else w.at(table))
    return (f"ek_gather_rows({w.size(indices)}, {rows}, {features}, {w.at(indices)}, {source}, "
            f"{w.at(node.outputs[0])});")


# --- gpu target (torch), on-device learning, spiking ------------------------------------------

@embedding.implements("gpu")
def _gpu(indices, table):
    import torch.nn.functional as F

    return F.embedding(indices.long(), table)


embedding.unsupported("learn", "edgekit.learn trains sequential chains of conv/linear blocks "
                               "fed by float inputs; an embedding table has no rule there")

from edgekit.ops.spiking import no_spiking_form  # noqa: E402

no_spiking_form(embedding, "converters.snn.to_snn converts float inputs to spikes; indices into "
                           "a table are not rates")
