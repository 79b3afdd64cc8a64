"""The emulated boards per Arm core (``firmware_bridge.ports``: Cortex-M3, M4, M7, M55): device
profiles that say what the linker scripts give, images that sit where their profile says, and
(slow) every core's kernels bit-exact with the runtime on its own board."""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess

import numpy as np
import pytest

import edgekit
from edgekit.errors import EdgekitError
from edgekit.firmware_bridge.board import qemu_missing
from edgekit.firmware_bridge.build import CC, board_dir, toolchain_missing
from edgekit.firmware_bridge.ports import PORTS
from edgekit.profile.devices import load_profile

_NO_BOARD = toolchain_missing() or qemu_missing()
needs_board = pytest.mark.skipif(bool(_NO_BOARD), reason=f"MCU target unavailable: {_NO_BOARD}")


def regions(core: str) -> dict[str, tuple[int, int]]:
    """The linker script's MEMORY regions: name -> (origin, length in bytes)."""
    text = (board_dir(core) / "link.ld").read_text()
    units = {"": 1, "K": 1024, "M": 1024 * 1024}
    found = {}
    for name, origin, length, unit in re.findall(
            r"(\w+) \([rwx]+\)\s*: ORIGIN = (0x[0-9A-Fa-f]+), LENGTH = (\d+)([KM]?)", text):
        found[name] = (int(origin, 16), int(length) * units[unit])
    return found


@pytest.mark.parametrize("core", list(PORTS))
def test_profile_says_what_the_linker_script_gives(core):
    profile = load_profile(PORTS[core].profile)
    memory = regions(core)
    assert profile.kind == "mcu"
    assert profile.flash_bytes == memory["FLASH"][1]  # where the weights go
    assert profile.sram_bytes == memory["RAM"][1]     # arena, buffers, stack


def test_unknown_core_names_the_known_ones():
    from edgekit.targets import get_target

    assert get_target("mcu:qemu:m55").profile == "cortex-m55-qemu"
    with pytest.raises(EdgekitError, match=r"no emulated board for core 'm0'.*m3, m4, m7, m55"):
        get_target("mcu:qemu:m0")


def test_targets_command_lists_every_core_board(capsys):
    import json

    from edgekit.cli import main

    main(["targets", "--json"])
    names = {row["target"] for row in json.loads(capsys.readouterr().out)}
    assert {f"mcu:qemu:{core}" for core in PORTS if core != "m3"} | {"mcu:qemu"} <= names


def sections(elf) -> dict[str, tuple[int, int]]:
    """Allocated sections of an ELF: name -> (address, size)."""
    out = subprocess.run([CC.replace("gcc", "objdump"), "-h", str(elf)], capture_output=True,
                         text=True, check=True).stdout
    found = {}
    for m in re.finditer(r"^\s*\d+ (\S+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+[0-9a-f]+\s+[0-9a-f]+",
                         out, re.M):
        found[m.group(1)] = (int(m.group(3), 16), int(m.group(2), 16))
    return found


def assert_image_sits_where_its_profile_says(core, elf):
    """The weights (the model's const arrays) lie in the profile's flash, data, bss and stack in
    its SRAM, and the image's flash and RAM use (``elf_sizes``) within the profile's sizes."""
    from edgekit.targets.mcu import elf_sizes

    memory, profile = regions(core), load_profile(PORTS[core].profile)
    nm = subprocess.run([CC.replace("gcc", "nm"), "-S", str(elf)], capture_output=True,
                        text=True, check=True).stdout
    weights = [int(m.group(1), 16) for m in re.finditer(r"^(\w+) \w+ [rRtT] k\d+$", nm, re.M)]
    assert weights
    flash_origin, flash_len = memory["FLASH"]
    assert all(flash_origin <= a < flash_origin + flash_len for a in weights)
    ram_origin, ram_len = memory["RAM"]
    found = sections(elf)
    for name in (".data", ".bss", ".stack"):
        address, size = found[name]
        assert ram_origin <= address and address + size <= ram_origin + ram_len, name
    sizes = elf_sizes(elf)
    assert 0 < sizes["flash_bytes"] <= profile.flash_bytes
    assert 0 < sizes["ram_bytes"] <= profile.sram_bytes


@pytest.fixture(scope="module")
def kernels_graph():
    """An int8 Graph over every shape case of the per-core kernels: 3x3 and 1x1 convolutions
    with depths and channel and pixel counts that leave remainders (of 2, 4 and 16), strided,
    grouped and dilated ones, depthwise 3x3 at strides 1 and 2, dilated and on rows longer than
    a block of outputs (81), 5x3 depthwise, and fully connected layers with odd widths; then
    average pool and add."""
    torch = pytest.importorskip("torch")
    from torch import nn

    class Kernels(nn.Module):
        def __init__(self):
            super().__init__()
            self.c3 = nn.Conv2d(3, 7, 3, padding=1)                         # depth 27, 7 out
            self.dw = nn.Conv2d(7, 7, 3, padding=1, groups=7)
            self.dw2 = nn.Conv2d(7, 7, 3, stride=2, padding=1, groups=7)
            self.dwd = nn.Conv2d(7, 7, 3, padding=2, dilation=2, groups=7)
            self.dw53 = nn.Conv2d(7, 7, (5, 3), padding=(2, 1), groups=7)
            self.dwwide = nn.Conv2d(7, 7, 3, padding=1, groups=7)           # rows of 81
            self.pw = nn.Conv2d(7, 18, 1)                                    # depth 7
            self.c3s = nn.Conv2d(18, 5, 3, stride=2, padding=1)             # depth 162
            self.grp = nn.Conv2d(18, 6, 3, padding=1, groups=3)
            self.fc1 = nn.Linear(5 * 3 * 3, 33)
            self.fc2 = nn.Linear(33, 3)

        def forward(self, x):
            a = torch.relu(self.c3(x))
            wide = self.dwwide(a.reshape(1, 7, 1, 81)).reshape(1, 7, 9, 9)
            b = self.dw(a) + self.dwd(a) + self.dw53(a) + wide
            c = torch.relu(self.pw(nn.functional.avg_pool2d(self.dw2(b), 2, 1, 1)))
            d = self.c3s(c + torch.cat([torch.relu(self.grp(c))] * 3, 1))
            return self.fc2(torch.relu(self.fc1(d.flatten(1))))

    torch.manual_seed(0)
    x = torch.randn(1, 3, 9, 9)
    graph = edgekit.from_torch(torch.export.export(Kernels().eval(), (x,)))
    calibration = np.random.default_rng(0).standard_normal((64, 3, 9, 9)).astype(np.float32)
    return edgekit.quantize(graph, calibration)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no host C compiler (gcc)")
@pytest.mark.parametrize("emulate", ["", "-DEK_EMULATE_DSP", "-DEK_EMULATE_MVE"])
def test_core_kernels_match_the_runtime_on_the_host(tmp_path, emulate, kernels_graph):
    """The kernels each core builds (the M3's plain C; the M4/M7's and the M55's with their
    SIMD instructions emulated in C by ek_simd.h) against the numba runtime, every layer, bit
    for bit, compiled for this host."""
    from test_firmware_kernels import MODEL_HARNESS, all_ops_graph, kernel_sources, ptr

    from edgekit.converters.to_c import to_c
    from edgekit.firmware_bridge.build import FIRMWARE
    from edgekit.quant.edge import quantize_array
    from edgekit.runtime.executor import Executor

    cases = [(kernels_graph, (3, 9, 9))]
    if emulate == "-DEK_EMULATE_MVE":  # the vector requantization under every op around
        cases.append((all_ops_graph(), (2, 12, 12)))
    for graph, shape in cases:
        to_c(graph, tmp_path)
        (tmp_path / "harness.c").write_text(MODEL_HARNESS)
        lib = tmp_path / f"lib{len(shape)}{shape[1]}.so"
        sources = kernel_sources()
        subprocess.run(["gcc", "-std=c99", "-O2", "-shared", "-fPIC", *filter(None, [emulate]),
                        f"-I{FIRMWARE}", f"-I{tmp_path}", str(tmp_path / "harness.c"), *sources,
                        str(tmp_path / "model.c"), "-lm", "-o", str(lib)], check=True,
                       capture_output=True)
        run = ctypes.CDLL(str(lib)).host_run
        x = np.random.default_rng(1).standard_normal((3, *shape)).astype(np.float32) * 1.5
        for sample in quantize_array(x, graph.tensors[graph.inputs[0]].quant):
            ref = Executor(graph).run_layers(sample[None], raw=True)
            for step, node in enumerate(graph.nodes):
                if node.op in ("softmax", "layernorm"):  # float inside: not these kernels
                    continue
                want = ref[node.outputs[0]].reshape(-1)
                got = np.empty(want.size, np.int8)
                run(ptr(np.ascontiguousarray(sample)), ctypes.c_uint16(step), ptr(got))
                np.testing.assert_array_equal(got, want, err_msg=f"{node.op} (step {step})")


@needs_board
@pytest.mark.slow
@pytest.mark.parametrize("core", list(PORTS))
def test_core_kernels_bit_exact_on_their_board(core, kernels_graph):
    """Every core's build of the kernels on its own emulated board: the kernels Graph's int8
    outputs equal the runtime's on 20 inputs (benchmarks/mcu_cores.py runs 200 per model); the
    board ticks at its profile's clock; its image sits where the profile says."""
    from edgekit.quant.edge import quantize_array

    graph = kernels_graph
    x = np.random.default_rng(2).standard_normal((20, 3, 9, 9)).astype(np.float32) * 1.5
    xq = quantize_array(x, graph.tensors[graph.inputs[0]].quant)
    with edgekit.deploy(graph, "cpu") as cpu:
        want = cpu.run(xq, raw=True)
    with edgekit.deploy(graph, f"mcu:qemu:{core}") as session:
        got = session.run(xq, raw=True)
        assert session.hello.tick_hz == load_profile(PORTS[core].profile).clock_hz
    np.testing.assert_array_equal(got, want)
    assert_image_sits_where_its_profile_says(core, session.firmware.elf)


@pytest.fixture(scope="module")
def float_snn(digits):
    """A float32 spiking CNN (the digits CNN, untrained, T = 4) and four digits."""
    torch = pytest.importorskip("torch")
    from edgekit import models
    from edgekit.converters.snn import to_snn

    torch.manual_seed(0)
    net = models.digits_cnn(16, pool="avg").eval()
    x = torch.from_numpy(digits.x_test[:1])
    graph = to_snn(edgekit.from_torch(torch.export.export(net, (x,))), digits.x_train[:64],
                   timesteps=4)
    return graph, np.ascontiguousarray(digits.x_test[:4], np.float32)


@needs_board
@pytest.mark.slow
@pytest.mark.parametrize("core", [c for c in PORTS if c != "m3"])
def test_float_spiking_graph_on_the_fpu_equals_the_runtime(core, float_snn):
    """A float32 spiking CNN on a core with an FPU (hard-float build, no fused multiply-add):
    outputs bit-identical to the SpikingExecutor's."""
    from edgekit.runtime.spiking import SpikingExecutor

    graph, samples = float_snn
    ex = SpikingExecutor(graph)
    want = np.concatenate([ex.run(s[None])[0] for s in samples])
    with edgekit.deploy(graph, f"mcu:qemu:{core}") as session:
        got = np.concatenate([session.run(s[None])[0] for s in samples])
    np.testing.assert_array_equal(got, want)
