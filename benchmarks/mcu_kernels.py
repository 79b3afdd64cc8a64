"""Instructions per MAC of the firmware's conv and fully connected kernels on the emulated
Cortex-M3 (QEMU -icount: emulated instruction counts, not cycles), and the firmware's size
without weights.

Goals (issue): <= 4 instructions per MAC; <= 16 KB of firmware without weights (TFLM's core
alone is ~16 KB on a Cortex-M3). The conv inner loop (``ek_dot2x2``) is, as gcc -O2 emits it:

    ldrsb r7, [r3], #1      ; column 0 byte
    ldrsb ip, [lr], #1      ; weight row 0 byte
    ldrsb r6, [r8], #1      ; weight row 1 byte
    mla   r1, r7, ip, r1
    mla   r4, r7, r6, r4
    ldrsb r7, [r10], #1     ; column 1 byte
    cmp   r5, r3
    mla   r2, r7, ip, r2
    mla   r0, r7, r6, r0
    bne   .loop

10 instructions for 4 MACs (2.5 per MAC): two output pixels x two output channels share each
load. The rest of a layer's count is copying windows into columns and requantizing.

Run: ``NUMBA_CACHE_DIR=.numba_cache .venv/bin/python benchmarks/mcu_kernels.py``
"""

from __future__ import annotations

import re
import subprocess

import numpy as np
import torch
from torch import nn

import edgekit
from edgekit.firmware_bridge.build import CC


def int8(net: nn.Module, shape: tuple[int, ...]):
    torch.manual_seed(0)
    graph = edgekit.from_torch(torch.export.export(net.eval(), (torch.zeros(1, *shape),)))
    calibration = np.random.default_rng(0).standard_normal((32, *shape)).astype(np.float32)
    return edgekit.quantize(graph, calibration)


CASES = {
    "conv 3x3 16->32 @16x16": (nn.Conv2d(16, 32, 3, padding=1), (16, 16, 16)),
    "conv 1x1 32->32 @16x16": (nn.Conv2d(32, 32, 1), (32, 16, 16)),
    "depthwise 3x3 32 @16x16": (nn.Conv2d(32, 32, 3, padding=1, groups=32), (32, 16, 16)),
    "fully connected 512->128": (nn.Linear(512, 128), (512,)),
}


def weight_bytes(elf) -> int:
    """Bytes of the model's const arrays (to_c names them k0, k1, ...) in the image."""
    out = subprocess.run([CC.replace("gcc", "nm"), "-S", str(elf)], capture_output=True,
                         text=True, check=True).stdout
    return sum(int(m.group(1), 16) for m in re.finditer(r"^\w+ (\w+) [rRtT] k\d+$", out, re.M))


def main() -> None:
    torch.manual_seed(0)
    rows = []
    for name, (net, shape) in CASES.items():
        graph = int8(net, shape)
        x = np.random.default_rng(1).standard_normal((1, *shape)).astype(np.float32)
        with edgekit.deploy(graph, "mcu:qemu") as session:
            prof = session.device_profile(x)
        macs = graph.node_macs(graph.nodes[0])
        instructions = prof["layer_instructions"][0]
        size = prof["flash_bytes"] - weight_bytes(session.firmware.elf)
        rows.append((name, macs, instructions, instructions / macs, size))
    print(f"{'kernel':28} {'MACs':>9} {'instructions':>13} {'instr/MAC':>10}")
    for name, macs, instructions, per_mac, _ in rows:
        print(f"{name:28} {macs:9d} {instructions:13d} {per_mac:10.2f}")
    print(f"firmware without weights: {rows[0][4]:,} B of flash (kernels, protocol server, "
          "startup, UART; goal <= 16 KB)")


if __name__ == "__main__":
    main()
