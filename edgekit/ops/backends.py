"""The backends an op can implement, each with what its implementation is called with.

An op module registers an implementation per backend (``op.implements(name)``) or declares why
there is none (``op.unsupported(name, reason)``); an op that does neither for a backend is
reported by ``tests/test_conformance.py``. The contract of each backend's function is written
here once, so an op module is written against this table and nothing else.
"""

BACKENDS: dict[str, str] = {
    # the edgekit runtime (edgekit.runtime): prepare(ins, out, **attrs[, scratch][, quant]) -> step
    "float32": "edgekit runtime, float32 kernels: prepare(ins, out, **attrs) -> step",
    "int8": "edgekit runtime, int8 kernels: prepare(ins, out, *, quant, **attrs) -> step",
    "spiking": "edgekit runtime, event-driven spiking kernels (float32 spiking Graphs)",
    "spiking_int8": "edgekit runtime, integer spiking kernels (int8 spiking Graphs)",
    # importers (converters.from_torch / from_onnx): lower(ctx, *args) -> Graph value
    "torch": "torch.export importer: options names=(ATen op names,)",
    "onnx_import": "ONNX importer: options names=(ONNX op types,)",
    # writers
    "tflite": "TFLite writer (cpu:litert, cpu:tflite-micro): visit(writer, node); option "
              "channels_last=True when it reads its input NHWC/NLC (a Graph input is then "
              "written so); no_int8=reason for a float32-only form",
    "onnx": "ONNX writer (cpu:onnxruntime, float32 and QDQ int8): visit(emitter, node, inputs)",
    "onnx_spiking": "time-unrolled ONNX writer of int8 spiking Graphs",
    "c": "C writer for the firmware (mcu targets, int8): visit(writer, index, node) -> C call",
    "c_spiking": "C writer for spiking Graphs on the firmware",
    # other consumers
    "gpu": "gpu target's torch backend: fn(*inputs, **attrs) on torch tensors",
    "quant_spiking": "int8 quantizer of spiking Graphs: quantize(graph, node, params, ...)",
    "learn": "on-device learning (edgekit.learn): how the op joins the chain of trainable "
             "blocks: join(blocks, graph, node, where) appends a block or changes the last one; "
             "option keeps_block_shape=True when the last block's output keeps its own shape "
             "(reshape)",
}

# The domain of the functions the ONNX writer defines in a model for ops ONNX (opset 17) lacks
# (``_Emitter.function``); the ONNX importer reads them back as the op by ``domain.op_type``.
ONNX_DOMAIN = "ai.edgekit"
