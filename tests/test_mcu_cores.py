"""The emulated boards per Arm core (``firmware_bridge.ports``: Cortex-M3, M4, M7, M55): device
profiles that say what the linker scripts give, images that sit where their profile says, and
(slow) every core's kernels bit-exact with the runtime on its own board."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

import edgekit
from edgekit.errors import EdgekitError
from edgekit.firmware_bridge.board import qemu_missing
from edgekit.firmware_bridge.build import CC, board_dir, toolchain_missing
from edgekit.firmware_bridge.ports import PORTS
from edgekit.profile.devices import load_profile

_MISSING = toolchain_missing()
needs_toolchain = pytest.mark.skipif(bool(_MISSING), reason=f"no firmware toolchain: {_MISSING}")
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


@pytest.fixture(scope="module")
def tiny_graph():
    torch = pytest.importorskip("torch")
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 6 * 6, 5)).eval()
    graph = edgekit.from_torch(torch.export.export(net, (torch.zeros(1, 2, 6, 6),)))
    x = np.random.default_rng(0).standard_normal((16, 2, 6, 6)).astype(np.float32)
    return edgekit.quantize(graph, x)


def sections(elf) -> dict[str, tuple[int, int]]:
    """Allocated sections of an ELF: name -> (address, size)."""
    out = subprocess.run([CC.replace("gcc", "objdump"), "-h", str(elf)], capture_output=True,
                         text=True, check=True).stdout
    found = {}
    for m in re.finditer(r"^\s*\d+ (\S+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+[0-9a-f]+\s+[0-9a-f]+",
                         out, re.M):
        found[m.group(1)] = (int(m.group(3), 16), int(m.group(2), 16))
    return found


@needs_toolchain
@pytest.mark.slow
@pytest.mark.parametrize("core", list(PORTS))
def test_image_sits_where_its_profile_says(core, tiny_graph):
    """The weights (the model's const arrays) lie in the profile's flash, data, bss and stack in
    its SRAM, and the image's flash and RAM use (``elf_sizes``) within the profile's sizes."""
    from edgekit.converters.to_c import generate
    from edgekit.firmware_bridge.build import build
    from edgekit.targets.mcu import elf_sizes

    firmware = build(*generate(tiny_graph), board=core)
    memory, profile = regions(core), load_profile(PORTS[core].profile)
    nm = subprocess.run([CC.replace("gcc", "nm"), "-S", str(firmware.elf)], capture_output=True,
                        text=True, check=True).stdout
    weights = [int(m.group(1), 16) for m in re.finditer(r"^(\w+) \w+ [rRtT] k\d+$", nm, re.M)]
    assert weights
    flash_origin, flash_len = memory["FLASH"]
    assert all(flash_origin <= a < flash_origin + flash_len for a in weights)
    ram_origin, ram_len = memory["RAM"]
    found = sections(firmware.elf)
    for name in (".data", ".bss", ".stack"):
        address, size = found[name]
        assert ram_origin <= address and address + size <= ram_origin + ram_len, name
    sizes = elf_sizes(firmware.elf)
    assert 0 < sizes["flash_bytes"] <= profile.flash_bytes
    assert 0 < sizes["ram_bytes"] <= profile.sram_bytes


@needs_board
@pytest.mark.slow
@pytest.mark.parametrize("core", [c for c in PORTS if c != "m3"])
def test_each_core_answers_on_its_board(core, tiny_graph):
    """The board of each core boots, takes a request (its UART receives by interrupt) and
    answers with the runtime's outputs; its tick rate is its profile's clock."""
    x = np.random.default_rng(1).standard_normal((3, 2, 6, 6)).astype(np.float32)
    with edgekit.deploy(tiny_graph, "cpu") as cpu:
        want = cpu.run(x)
    with edgekit.deploy(tiny_graph, f"mcu:qemu:{core}") as session:
        got = session.run(x)
        assert session.hello.tick_hz == load_profile(PORTS[core].profile).clock_hz
    np.testing.assert_array_equal(got, want)
