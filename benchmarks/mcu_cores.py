"""Instructions per MAC of the firmware's int8 kernels and of whole models on every emulated
core (``mcu:qemu:<core>``: Cortex-M3, M4 and M7 with SMLAD, M55 with Helium), the image's flash
and RAM, and whether the board's outputs equal the runtime's.

Counts are QEMU ``-icount`` emulated instructions, not cycles: QEMU models no pipeline, so an
SMLAD, a load and a taken branch each count one. Kernels: one layer per model, its own count
(``layer_instructions``) over its MACs; average pool and add, which have no MACs, per output
element. Whole models: the instructions of one inference over the model's MACs, and the number
of inputs (``--inputs``, default 200) whose int8 outputs on the board equal the runtime's.

Goals (issue 16): M4/M7 3x3 and 1x1 convolution and fully connected <= 1.5 instructions per MAC,
depthwise <= 4; M55 convolution and fully connected <= 0.5.

Run: ``NUMBA_CACHE_DIR=.numba_cache .venv/bin/python benchmarks/mcu_cores.py [--inputs 200]
[--cores m3,m4,m7,m55]`` (docs/mcu.md has its table). ``--where KERNEL`` instead says where one
kernel's instructions go on each core: per firmware function, and the function's hottest loop
(the instructions that ran most often), counted by a QEMU TCG plugin
(``benchmarks/qemu_insn_plugin.c``, built here with the host's gcc) over one inference.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn

import edgekit
from edgekit import models, zoo
from edgekit.console import table
from edgekit.firmware_bridge.build import CC
from edgekit.firmware_bridge.ports import PORTS
from edgekit.quant.edge import quantize_array


class Add(nn.Module):
    def forward(self, x):
        a, b = x.chunk(2, 1)
        return a + b


KERNELS = {  # name: (layer, input shape, the op measured)
    "conv 3x3 16->32 @16x16": (lambda: nn.Conv2d(16, 32, 3, padding=1), (16, 16, 16), "conv2d"),
    "conv 1x1 32->32 @16x16": (lambda: nn.Conv2d(32, 32, 1), (32, 16, 16), "conv2d"),
    "depthwise 3x3 32 @16x16": (lambda: nn.Conv2d(32, 32, 3, padding=1, groups=32),
                                (32, 16, 16), "conv2d"),
    "fully connected 512->128": (lambda: nn.Linear(512, 128), (512,), "linear"),
    "avg pool 2x2 32 @16x16": (lambda: nn.AvgPool2d(2), (32, 16, 16), "avgpool2d"),
    "add 32 @16x16": (Add, (64, 16, 16), "add"),
}
MODELS = {  # name: (module, input shape)
    "digits CNN": (lambda: models.digits_cnn(16), (1, 16, 16)),
    "ds_cnn": (lambda: models.ds_cnn(16), (1, 16, 16)),
    "MLPerf Tiny KWS DS-CNN": (lambda: zoo.network("kws_ds_cnn"), (1, 49, 10)),
    "MLPerf Tiny IC ResNet-8": (lambda: zoo.network("ic_resnet8"), (3, 32, 32)),
}


def int8(net: nn.Module, shape: tuple[int, ...]) -> edgekit.Graph:
    torch.manual_seed(0)
    net = net.eval()
    graph = edgekit.from_torch(torch.export.export(net, (torch.zeros(1, *shape),)))
    calibration = np.random.default_rng(0).standard_normal((64, *shape)).astype(np.float32)
    return edgekit.quantize(graph, calibration)


def kernel_row(name: str, cores: list[str]) -> list[str]:
    build, shape, op = KERNELS[name]
    torch.manual_seed(0)
    graph = int8(build(), shape)
    step = next(i for i, n in enumerate(graph.nodes) if n.op == op)
    node = graph.nodes[step]
    macs = graph.node_macs(node)
    per = macs or int(np.prod(graph.tensors[node.outputs[0]].shape[1:]))
    x = np.random.default_rng(1).standard_normal((1, *shape)).astype(np.float32)
    cells = []
    for core in cores:
        with edgekit.deploy(graph, f"mcu:qemu:{core}") as session:
            instructions = session.device_profile(x)["layer_instructions"][step]
        cells.append(f"{instructions / per:.2f}")
    return [name, f"{per:,} {'MACs' if macs else 'outputs'}", *cells]


def model_rows(name: str, cores: list[str], inputs: int) -> list[list[str]]:
    build, shape = MODELS[name]
    torch.manual_seed(0)
    graph = int8(build(), shape)
    macs = sum(graph.node_macs(n) for n in graph.nodes)
    x = np.random.default_rng(1).standard_normal((inputs, *shape)).astype(np.float32)
    xq = quantize_array(x, graph.tensors[graph.inputs[0]].quant)
    with edgekit.deploy(graph, "cpu") as cpu:
        want = cpu.run(xq, raw=True)
    rows = []
    for core in cores:
        with edgekit.deploy(graph, f"mcu:qemu:{core}") as session:
            got = session.run(xq, raw=True)
            prof = session.device_profile(x[:1])
        same = sum(all(np.array_equal(g[i], w[i]) for g, w in zip(got, want))
                   if isinstance(got, list) else np.array_equal(got[i], want[i])
                   for i in range(inputs))
        rows.append([name if core == cores[0] else "", core, f"{macs:,}",
                     f"{prof['instructions']:,}", f"{prof['instructions'] / macs:.2f}",
                     f"{prof['flash_bytes']:,}", f"{prof['ram_bytes']:,}",
                     f"{same} / {inputs}"])
    return rows


PROTOCOL = ("ek_serve", "ek_crc8", "ek_crc32")  # the firmware's serving, not kernels


def where(name: str, cores: list[str]) -> None:
    """Per core, the kernel's instructions per MAC (per output without MACs) in each firmware
    function of one inference, from per-address execution counts (a QEMU plugin, put on QEMU's
    command line by a wrapper first on PATH) and the ELF's symbols."""
    build, shape, op = KERNELS[name]
    torch.manual_seed(0)
    graph = int8(build(), shape)
    node = next(n for n in graph.nodes if n.op == op)
    per = graph.node_macs(node) or int(np.prod(graph.tensors[node.outputs[0]].shape[1:]))
    x = np.random.default_rng(1).standard_normal((1, *shape)).astype(np.float32)
    xq = quantize_array(x, graph.tensors[graph.inputs[0]].quant)
    qemu = shutil.which("qemu-system-arm")
    with tempfile.TemporaryDirectory() as tmp:
        plugin = Path(tmp) / "libinsn.so"
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(plugin),
                        str(Path(__file__).with_name("qemu_insn_plugin.c"))], check=True)
        wrapper = Path(tmp) / "qemu-system-arm"
        wrapper.write_text(f'#!/bin/sh\nexec {qemu} -plugin {plugin},out="$EK_INSN_OUT" "$@"\n')
        wrapper.chmod(0o755)
        os.environ["PATH"] = f"{tmp}{os.pathsep}{os.environ['PATH']}"
        rows = []
        for core in cores:
            os.environ["EK_INSN_OUT"] = counts_file = f"{tmp}/{core}.txt"
            with edgekit.deploy(graph, f"mcu:qemu:{core}") as session:
                session.run(xq, raw=True)
                elf = session.firmware.elf
            counts: Counter = Counter()
            for line in Path(counts_file).read_text().splitlines():
                address, count = line.split()
                counts[int(address, 16)] += int(count)
            symbols = [(int(f[0], 16), int(f[1], 16), f[3]) for f in (
                line.split() for line in subprocess.run(
                    [CC.replace("gcc", "nm"), "-S", str(elf)], capture_output=True, text=True,
                    check=True).stdout.splitlines()) if len(f) == 4 and f[2] in "tT"]
            by_function: dict[str, Counter] = {}
            for address, count in counts.items():
                for start, size, symbol in symbols:
                    if start <= address < start + size:
                        by_function.setdefault(symbol, Counter())[address] = count
                        break
            for symbol, hits in sorted(by_function.items(), key=lambda kv: -sum(kv[1].values())):
                total = sum(hits.values())
                if symbol in PROTOCOL or not symbol.startswith("ek_") or total < per / 200:
                    continue
                top = max(hits.values())
                loop = sum(1 for c in hits.values() if c == top)
                rows.append([core, symbol, f"{total / per:.3f}",
                             f"{loop} x {top:,} = {loop * top / per:.3f}"])
    print(f"{name}: emulated instructions per {'MAC' if graph.node_macs(node) else 'output'} "
          f"in each kernel function, one inference")
    print(table(["core", "function", "instr/MAC", "hottest loop: instructions x runs"], rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=200)
    ap.add_argument("--cores", default=",".join(PORTS))
    ap.add_argument("--kernels-only", action="store_true")
    ap.add_argument("--where", choices=list(KERNELS), help="where one kernel's instructions go")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cores = args.cores.split(",")
    if args.where:
        where(args.where, cores)
        return
    print("Kernels: emulated instructions per MAC (per output element for pool and add)")
    print(table(["kernel", "work", *cores], [kernel_row(k, cores) for k in KERNELS]))
    if args.kernels_only:
        return
    print(f"\nWhole int8 models: one inference; outputs equal to the runtime's over "
          f"{args.inputs} inputs")
    rows = [r for name in MODELS for r in model_rows(name, cores, args.inputs)]
    print(table(["model", "core", "MACs", "instructions", "instr/MAC", "flash B", "RAM B",
                 "= runtime"], rows))


if __name__ == "__main__":
    main()
