"""Host speed: edgekit's ``cpu`` target against LiteRT (XNNPACK) and ONNX Runtime, one thread
each, float32 and int8, batch 1 and batch 32, all in one run on the same inputs.

    python benchmarks/host_runtime.py [--runs 400] [--runs32 40] [--json out.json]

Every backend is called through its own API, as a user of it would: LiteRT's ``Interpreter``
(``set_tensor``, ``invoke``, ``get_tensor``, channels-last input prepared beforehand), ONNX
Runtime's ``InferenceSession.run``, edgekit's ``deploy(graph, "cpu").run``. An int8 model
takes and gives int8 tensors on all three (edgekit: ``raw=True``), a float model float32.
"edgekit" is the runtime as it serves (the Program fused into one function after warm-up,
``docs/host-runtime.md``); "steps" is the same runtime stepping through the Program from
Python, as it ran before fusing (``EDGEKIT_FUSE_AFTER=off``). Calls are interleaved (one call
of each backend in turn, ``--runs`` rounds) and the medians printed, since the CPUs here are
shared; the load average is printed with them. Weights are at initialisation (batch norms
calibrated): speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch

import edgekit
from edgekit import models, zoo
from edgekit.console import table
from edgekit.fileio import atomic_write_bytes
from edgekit.quant import quantize_array


def _models() -> dict:
    torch.manual_seed(0)
    digits = np.random.default_rng(0).random((64, 1, 16, 16), np.float32)
    return {
        "digits CNN": (models.digits_cnn(16).eval(), digits),
        "DS-CNN (edgekit.models)": (models.ds_cnn(16).eval(), digits),
        "MLP 256-128-64-10": (models.mlp(256).eval(), digits),
        "KWS DS-CNN (MLPerf Tiny)": (zoo.network("kws_ds_cnn"),
                                     zoo.sample_inputs("kws_ds_cnn", 64).astype(np.float32)),
    }


def litert_call(graph, x: np.ndarray):
    from edgekit.converters.to_tflite import tflite_model
    from edgekit.targets.litert import _interpreter_module, to_layout

    model = tflite_model(graph)
    index, layout = model.tensors[graph.inputs[0]]
    out_index = model.tensors[graph.outputs[0]][0]
    it = _interpreter_module().Interpreter(model_content=model.data, num_threads=1)
    xl = to_layout(x, layout)
    it.resize_tensor_input(index, list(xl.shape))
    it.allocate_tensors()

    def call():
        it.set_tensor(index, xl)
        it.invoke()
        return it.get_tensor(out_index)

    return call


def ort_call(graph, x: np.ndarray):
    import onnxruntime as ort

    from edgekit.converters.to_onnx import onnx_model

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(onnx_model(graph).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    feeds, outputs = {graph.inputs[0]: x}, [graph.outputs[0]]
    return lambda: session.run(outputs, feeds)


def edgekit_call(graph, x: np.ndarray, fuse: bool):
    session = edgekit.deploy(graph, "cpu")
    session.executor.fuse_after = 0 if fuse else None
    raw = graph.tensors[graph.inputs[0]].dtype == "int8"
    return lambda: session.run(x, raw=raw)


def medians(calls: dict, runs: int) -> dict[str, float]:
    """Median µs of each call over ``runs`` interleaved rounds, after a warm-up round."""
    for call in calls.values():
        for _ in range(5):
            call()
    times = {name: [] for name in calls}
    for _ in range(runs):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e6 for name, t in times.items()}


def measure(runs: int, runs32: int) -> list[dict]:
    rows = []
    for name, (net, xs) in _models().items():
        graph = edgekit.from_torch(net, (torch.from_numpy(xs[:1]),))
        qgraph = edgekit.quantize(graph, xs[:32])
        macs = sum(graph.node_macs(n) for n in graph.nodes)
        for kind, g in (("float32", graph), ("int8", qgraph)):
            x_all = (xs if kind == "float32"
                     else quantize_array(xs, qgraph.tensors[qgraph.inputs[0]].quant))
            for batch, n in ((1, runs), (32, runs32)):
                x = np.ascontiguousarray(x_all[:batch])
                calls = {"edgekit": edgekit_call(g, x, True), "steps": edgekit_call(g, x, False),
                         "litert": litert_call(g, x), "ort": ort_call(g, x)}
                want = calls["steps"]()
                np.testing.assert_array_equal(calls["edgekit"](), want)
                rows.append({"model": name, "macs": macs, "dtype": kind, "batch": batch,
                             **medians(calls, n)})
                print(_line(rows[-1]), flush=True)
    return rows


def _line(r: dict) -> str:
    return (f"{r['model']} {r['dtype']} batch {r['batch']}: edgekit {r['edgekit']:.1f} µs, "
            f"steps {r['steps']:.1f}, LiteRT {r['litert']:.1f}, ORT {r['ort']:.1f}")


def _load() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400, help="rounds at batch 1")
    parser.add_argument("--runs32", type=int, default=40, help="rounds at batch 32")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = _load()
    rows = measure(args.runs, args.runs32)
    print(f"\n{start} at the start, {_load()} at the end ({os.cpu_count()} CPUs)")
    print("medians, µs per call; ratio = edgekit / peer (<= 1: edgekit as fast or faster)\n")
    print(table(["model", "dtype", "batch", "edgekit", "steps (before)", "LiteRT", "ORT",
                 "/ LiteRT", "/ ORT"],
                [(r["model"], r["dtype"], r["batch"], f"{r['edgekit']:.1f}",
                  f"{r['steps']:.1f}", f"{r['litert']:.1f}", f"{r['ort']:.1f}",
                  f"{r['edgekit'] / r['litert']:.2f}", f"{r['edgekit'] / r['ort']:.2f}")
                 for r in rows]))
    if args.json:
        atomic_write_bytes(args.json, json.dumps(rows, indent=1).encode())


if __name__ == "__main__":
    main()
