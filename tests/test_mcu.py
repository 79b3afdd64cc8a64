"""The microcontroller target on the emulated Cortex-M3 (QEMU mps2-an385): bit-exactness with
the edgekit runtime and tflite-micro, per-layer parity, profiling, link faults through a
fault-injecting proxy, and the fit check. Each model's firmware is built once per session
(and cached); every board started here is stopped, and the last test checks that no QEMU
process is left behind."""

from __future__ import annotations

import random
import socket
import threading
import time

import numpy as np
import pytest

import edgekit
from edgekit.errors import EdgekitError
from edgekit.firmware_bridge.board import QemuBoard, qemu_missing
from edgekit.firmware_bridge.build import toolchain_missing
from edgekit.quant.edge import quantize_array

_MISSING = toolchain_missing() or qemu_missing()
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=f"MCU target unavailable: {_MISSING}")



def int8_model(ctor, ds):
    torch = pytest.importorskip("torch")
    from edgekit import models

    net = models.train(ctor(16), ds.x_train, ds.y_train, epochs=1)
    graph = edgekit.from_torch(torch.export.export(net, (torch.from_numpy(ds.x_test[:1]),)))
    return edgekit.quantize(graph, ds.x_train[:300])


@pytest.fixture(scope="module", params=["digits_cnn", "ds_cnn"])
def model_on_board(request, digits):
    from edgekit import models

    graph = int8_model(getattr(models, request.param), digits)
    session = edgekit.deploy(graph, "mcu:qemu")
    try:
        yield request.param, graph, session
    finally:
        session.close()


def test_outputs_bit_identical_to_runtime_and_tflite_micro(model_on_board, digits):
    name, graph, session = model_on_board
    xq = quantize_array(digits.x_test[:200], graph.tensors[graph.inputs[0]].quant)
    on_board = session.run(xq, raw=True)
    with edgekit.deploy(graph, "cpu") as cpu:
        runtime = cpu.run(xq, raw=True)
    assert len(on_board) == 200
    identical = [np.array_equal(a, b) for a, b in zip(on_board, runtime)]
    assert all(identical), f"{name}: {identical.count(False)} of 200 differ from the runtime"
    tflm = pytest.importorskip("tflite_micro") and edgekit.deploy(graph, "cpu:tflite-micro")
    with tflm:
        np.testing.assert_array_equal(on_board, tflm.run(xq, raw=True))


def test_per_layer_parity(model_on_board, digits):
    _, graph, session = model_on_board
    x = digits.x_test[:3]
    on_board = session.run_layers(x)
    with edgekit.deploy(graph, "cpu") as cpu:
        runtime = cpu.run_layers(x)
    assert list(on_board) == [n.outputs[0] for n in graph.nodes]
    for tensor, value in on_board.items():
        np.testing.assert_array_equal(value, runtime[tensor], err_msg=tensor)


def test_validate_on_target(model_on_board, digits):
    from edgekit.validate import validate

    _, graph, _ = model_on_board
    report = validate(graph, "mcu:qemu", digits.x_test[:10], digits.y_test[:10])
    assert report["vs_edgekit_runtime"]["max_abs_error"] == 0.0
    assert all(layer["max_abs_error"] == 0.0 for layer in report["layers"])


def test_device_profile_is_repeatable(model_on_board, digits):
    _, graph, session = model_on_board
    first = session.device_profile(digits.x_test[:1])
    second = session.device_profile(digits.x_test[:1])
    # -icount: repeatable up to the phase of one 25 MHz SysTick tick (5 instructions)
    assert np.abs(np.subtract(first["layer_instructions"], second["layer_instructions"])
                  ).max() <= 5
    assert len(first["layer_instructions"]) == len(graph.nodes)
    weights = sum(graph.tensors[p].nbytes for p in graph.params)
    assert weights < first["flash_bytes"] < weights + 32 * 1024
    assert first["ram_bytes"] >= session.hello.arena_bytes


def test_reset_reboots_the_board(model_on_board, digits):
    _, _, session = model_on_board
    before = session.run(digits.x_test[:2], raw=False)
    hello = session.board.link.reset()
    assert hello.model_hash == session.hello.model_hash
    np.testing.assert_array_equal(session.run(digits.x_test[:2]), before)
    assert session.board.link.stats["reboots"] == 0  # the reboot was expected, not a fault


def test_a_frame_cut_short_is_abandoned(model_on_board):
    """The board drops a frame whose bytes stop coming (inter-byte timeout), so the next
    request is answered at the first attempt."""
    from edgekit.firmware_bridge.protocol import Cmd, Frame, encode

    _, _, session = model_on_board
    link = session.board.link
    link.port.write(encode(Frame(Cmd.PING, 200, bytes(40)))[:20])
    time.sleep(0.2)
    retries = link.stats["retries"]
    assert link.request(Cmd.PING, b"next") == b"next"
    assert link.stats["retries"] == retries


class FaultyProxy:
    """A TCP proxy between host and board that corrupts the stream: each byte is, with
    probability ``rate``, dropped, bit-flipped or duplicated; some chunks are delayed; and on
    request a host chunk is swallowed and a RESET sent to the board instead (the board reboots
    in the middle of the request)."""

    def __init__(self, board_port: int, rate: float, seed: int = 0):
        self.rate, self.rng = rate, random.Random(seed)
        self.counts = {"dropped": 0, "flipped": 0, "duplicated": 0, "delayed": 0, "resets": 0}
        self.reset_next = False
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.board = socket.create_connection(("127.0.0.1", board_port))
        self.board.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host: socket.socket | None = None
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.host, _ = self.server.accept()
        self.host.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=self._pump, args=(self.host, self.board, True), daemon=True
                         ).start()
        self._pump(self.board, self.host, False)

    def _corrupt(self, data: bytes) -> bytes:
        out = bytearray()
        for b in data:
            if self.rng.random() >= self.rate:
                out.append(b)
                continue
            fault = self.rng.choice(["dropped", "flipped", "duplicated"])
            self.counts[fault] += 1
            if fault == "flipped":
                out.append(b ^ (1 << self.rng.randrange(8)))
            elif fault == "duplicated":
                out += bytes([b, b])
        return bytes(out)

    def _pump(self, src: socket.socket, dst: socket.socket, to_board: bool) -> None:
        from edgekit.firmware_bridge.protocol import Cmd, Frame, encode

        try:
            while not self.stopped:
                data = src.recv(4096)
                if not data:
                    return
                if to_board and self.reset_next:
                    self.reset_next = False
                    self.counts["resets"] += 1
                    dst.sendall(encode(Frame(Cmd.RESET, 0)))
                    continue
                if self.rng.random() < 0.01:
                    self.counts["delayed"] += 1
                    time.sleep(self.rng.uniform(0.01, 0.08))
                dst.sendall(self._corrupt(data))
        except OSError:
            return

    def close(self) -> None:
        self.stopped = True
        for s in (self.host, self.board, self.server):
            if s is not None:
                s.close()


def tiny_graph():
    """A small int8 model, so that frames are short enough to get through 1 % corruption."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4))
    graph = edgekit.from_torch(torch.export.export(net.eval(), (torch.zeros(1, 8),)))
    return edgekit.quantize(graph, np.random.default_rng(0).standard_normal((64, 8))
                            .astype(np.float32))


def test_link_faults_never_give_wrong_results():
    import serial

    from edgekit.converters.to_c import generate
    from edgekit.firmware_bridge.build import build
    from edgekit.firmware_bridge.link import Link
    from edgekit.firmware_bridge.protocol import Cmd, parse_infer

    graph = tiny_graph()
    firmware = build(*generate(graph))
    board = QemuBoard(firmware.elf)
    proxy = None
    try:
        start = time.monotonic()
        for _ in range(20):
            board.link.request(Cmd.INFER, bytes(8))
        round_trip = (time.monotonic() - start) / 20  # timeouts scale with this machine's speed
        board_port = int(board.link.port.portstr.rsplit(":", 1)[1])
        board.link.close()  # QEMU's socket server takes the proxy as its next client
        board.link = None
        proxy = FaultyProxy(board_port, rate=0.01)
        link = Link(serial.serial_for_url(f"socket://127.0.0.1:{proxy.port}", timeout=0.05),
                    timeout=max(0.06, 6 * round_trip), retries=10)
        board.link = link
        xq = np.random.default_rng(1).integers(-128, 128, (1000, 8)).astype(np.int8)
        with edgekit.deploy(graph, "cpu") as cpu:
            expected = cpu.run(xq, raw=True)
        correct = wrong = failed = 0
        start = time.monotonic()
        for i, x in enumerate(xq):
            proxy.reset_next = i % 100 == 50
            try:
                _, _, out = parse_infer(link.request(Cmd.INFER, x.tobytes()), board.hello.steps)
            except EdgekitError:
                failed += 1
                continue
            if np.array_equal(np.frombuffer(out, np.int8), expected[i]):
                correct += 1
            else:
                wrong += 1
        elapsed = time.monotonic() - start
        print(f"\nlink faults: {correct} correct, {wrong} wrong, {failed} failed with "
              f"EdgekitError in {elapsed:.1f} s; injected {proxy.counts}; link {link.stats}")
        assert wrong == 0
        assert correct + failed == 1000
        assert failed <= 50  # bounded retries give up rarely (more often on a loaded machine)
        assert proxy.counts["resets"] == 10 and link.stats["reboots"] >= 1
    finally:
        if proxy is not None:
            proxy.close()
        board.stop()


def test_too_small_a_device_fails_before_building(monkeypatch):
    from dataclasses import replace

    from edgekit.firmware_bridge import build
    from edgekit.profile.devices import load_profile

    def no_build(*args, **kwargs):
        raise AssertionError("built although the model does not fit")

    monkeypatch.setattr(build, "build", no_build)
    graph = tiny_graph()
    small = replace(load_profile("cortex-m3-qemu"), name="tiny-m0", sram_bytes=8 * 1024,
                    flash_bytes=64)
    with pytest.raises(EdgekitError, match=r"does not fit tiny-m0: flash: .* exceeds it by"
                                           r"[\s\S]*sram: .* exceeds it by"):
        edgekit.deploy(graph, "mcu:qemu", profile=small)


def test_a_board_on_a_port(model_on_board):
    """``mcu:<port>`` speaks to a board already running the firmware (here the emulated one,
    through its socket as if it were a serial port) and checks the model it runs."""
    _, graph, session = model_on_board
    board = QemuBoard(session.firmware.elf)
    try:
        url = board.link.port.portstr
        board.link.close()  # free QEMU's socket for the port's connection
        board.link = None
        with edgekit.deploy(graph, f"mcu:{url}") as on_port:
            np.testing.assert_array_equal(on_port.run(np.zeros((1, 1, 16, 16), np.float32)),
                                          session.run(np.zeros((1, 1, 16, 16), np.float32)))
        other = tiny_graph()
        with pytest.raises(EdgekitError, match="runs model .* flash"):
            edgekit.deploy(other, f"mcu:{url}")
    finally:
        board.stop()


def test_an_int8_model_has_no_stats(model_on_board):
    """STATS (protocol 2) answers every model; an int8 one counts nothing."""
    from edgekit.firmware_bridge.protocol import Cmd

    _, _, session = model_on_board
    assert session.hello.protocol == 2
    assert session.board.link.request(Cmd.STATS) == b""
