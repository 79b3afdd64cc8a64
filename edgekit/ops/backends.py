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
    "spiking": "edgekit runtime, float32 spiking Graphs (edgekit.runtime.spiking): prepare(ins, "
               "out, **attrs) -> step run at each time step (an op that computes the same on "
               "spikes registers its float32 kernel); option event=True for a synapse layer's "
               "event-driven kernel (its SOPs counted)",
    "spiking_int8": "edgekit runtime, int8 spiking Graphs: as spiking, with option quant=True "
                    "when prepare takes quant (the QuantParams of the inputs, then the output)",
    # importers (converters.from_torch / from_onnx): lower(ctx, *args) -> Graph value
    "torch": "torch.export importer: options names=(ATen op names,)",
    "onnx_import": "ONNX importer: options names=(ONNX op types,)",
    # writers
    "tflite": "TFLite writer (cpu:litert, cpu:tflite-micro): visit(writer, node); option "
              "channels_last=True when it reads its input NHWC/NLC (a Graph input is then "
              "written so); no_int8=reason for a float32-only form",
    "onnx": "ONNX writer (cpu:onnxruntime, float32 and QDQ int8): visit(emitter, node, inputs)",
    "onnx_spiking": "time-unrolled ONNX writer (converters.snn_onnx): visit(emitter, step, "
                    "node) writes one time step of the op in an int8 spiking Graph (of a neuron "
                    "in either kind; float32 ones write other ops with their onnx visitor), its "
                    "last node making the step's output",
    "c": "C writer for the firmware (mcu targets, int8): visit(writer, index, node) -> C call",
    "c_spiking": "C writer of spiking Graphs for the firmware (converters.to_c_snn): "
                 "visit(writer, index, node) -> C call, float32 or int8 by the Graph's kind",
    # other consumers
    "gpu": "gpu target's torch backend: fn(*inputs, **attrs) on torch tensors; option "
           "state=True for a neuron: fn(membrane or None, *inputs, **attrs) -> (out, membrane)",
    "quant_spiking": "int8 quantizer of spiking Graphs (edgekit.quant.spiking): quantize(graph, "
                     "node, float_params, per_channel, partners) sets the output's dtype and "
                     "quant, and may rewrite the node as its integer op",
    "learn": "on-device learning (edgekit.learn): how the op joins the chain of trainable "
             "blocks: join(blocks, graph, node, where) appends a block or changes the last one; "
             "option keeps_block_shape=True when the last block's output keeps its own shape "
             "(reshape)",
}

# The domain of the functions the ONNX writer defines in a model for ops ONNX (opset 17) lacks
# (``_Emitter.function``); the ONNX importer reads them back as the op by ``domain.op_type``.
ONNX_DOMAIN = "ai.edgekit"
