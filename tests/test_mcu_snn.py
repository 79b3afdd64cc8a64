"""A spiking MLP (converters.snn) on the microcontroller firmware: the float32 spiking kernels
and converters.to_c_snn's time loop, host-compiled against the SpikingExecutor (always, given
gcc) and on the emulated Cortex-M3 (QEMU mps2-an385, given its toolchain). Both sides run the
same float32 operations in the same order, so the outputs must be bit-identical. Every board
started here is stopped."""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

import edgekit
from edgekit.firmware_bridge.board import QemuBoard, qemu_missing
from edgekit.firmware_bridge.build import FIRMWARE, build, toolchain_missing
from edgekit.firmware_bridge.protocol import Cmd, parse_infer

TIMESTEPS = 6


@pytest.fixture(scope="module")
def snn():
    torch = pytest.importorskip("torch")
    from edgekit import data, models
    from edgekit.converters.snn import to_snn

    ds = data.digits(8)
    torch.manual_seed(0)
    net = models.train(models.mlp(64, hidden=(32,)), ds.x_train, ds.y_train, epochs=3)
    graph = edgekit.from_torch(torch.export.export(net, (torch.from_numpy(ds.x_test[:1]),)))
    return to_snn(graph, ds.x_train[:300], timesteps=TIMESTEPS), ds, graph


def reference(graph, x):
    from edgekit.runtime.spiking import SpikingExecutor

    ex = SpikingExecutor(graph)
    return np.stack([ex.run(sample[None])[0] for sample in x]).astype(np.float32)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no host C compiler (gcc)")
@pytest.mark.parametrize("options", [{}, {"neuron": "lif", "reset": "zero", "v_init": 0.5}])
def test_time_loop_host_compiled_matches_spiking_executor(snn, tmp_path, options):
    from edgekit.converters.snn import to_snn
    from edgekit.converters.to_c_snn import to_c_snn

    graph, ds, ann = snn
    if options:  # the same ANN as a LIF network resetting to zero from half-charged membranes
        graph = to_snn(ann, ds.x_train[:300], timesteps=TIMESTEPS, **options)
    to_c_snn(graph, tmp_path)
    (tmp_path / "harness.c").write_text(
        '#include <string.h>\n#include "ek_model.h"\n'
        "void host_run(const float *in, float *out) {\n"
        "    memcpy(ek_model.arena + ek_model.inputs[0].offset, in, ek_model.inputs[0].size);\n"
        "    ek_model.run_step(0);\n"
        "    memcpy(out, ek_model.arena + ek_model.outputs[0].offset, ek_model.outputs[0].size);\n"
        "}\n")
    lib_path = tmp_path / "lib.so"
    subprocess.run(["gcc", "-std=c99", "-O2", "-shared", "-fPIC", f"-I{FIRMWARE}",
                    f"-I{tmp_path}", str(tmp_path / "harness.c"), str(FIRMWARE / "ek_kernels.c"),
                    str(tmp_path / "model.c"), "-lm", "-o", str(lib_path)], check=True)
    lib = ctypes.CDLL(str(lib_path))
    x = np.ascontiguousarray(ds.x_test[:100], np.float32)
    want = reference(graph, x)
    got = np.empty_like(want)
    for i, sample in enumerate(x):
        lib.host_run(sample.ctypes.data_as(ctypes.c_void_p),
                     got[i].ctypes.data_as(ctypes.c_void_p))
    np.testing.assert_array_equal(got, want)


_MISSING = toolchain_missing() or qemu_missing()


@pytest.mark.skipif(bool(_MISSING), reason=f"MCU target unavailable: {_MISSING}")
def test_spiking_mlp_on_qemu_matches_spiking_executor(snn):
    import os

    from edgekit.converters.to_c_snn import generate

    graph, ds, _ = snn
    firmware = build(*generate(graph))
    x = np.ascontiguousarray(ds.x_test[:40], np.float32)
    want = reference(graph, x)
    board = QemuBoard(firmware.elf)
    pid = board.pid
    try:
        assert board.hello.model_hash == firmware.model_hash
        got = []
        for sample in x:
            _, ticks, out = parse_infer(board.link.request(Cmd.INFER, sample.tobytes()), 1)
            got.append(np.frombuffer(out, "<f4"))
        print(f"spiking MLP T={TIMESTEPS} on the emulated Cortex-M3: {ticks[0]:,} ticks")
    finally:
        board.stop()
    np.testing.assert_array_equal(np.stack(got), want)  # same float32 operations, same order
    accuracy = (np.stack(got).argmax(1) == ds.y_test[:40]).mean()
    assert accuracy > 0.5, accuracy
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return
    with open(f"/proc/{pid}/stat") as stat:
        assert stat.read().split()[2] == "Z", f"QEMU {pid} is still running"
