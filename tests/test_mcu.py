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
    small = replace(load_profile("cortex-m3-qemu"), name="tiny-m0", sram_bytes=4 * 1024,
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
    """STATS (since protocol 2) answers every model; an int8 one counts nothing."""
    from edgekit.firmware_bridge.protocol import Cmd

    _, _, session = model_on_board
    assert session.hello.protocol == 3
    assert session.board.link.request(Cmd.STATS) == b""


@pytest.fixture(scope="module")
def streamed():
    """An int8 model whose input (3 x 64 x 64: 12,288 B) and first layer's output (16 x 64 x 64:
    65,536 B, more than the u16 frame length) are longer than the firmware's frame buffers:
    both stream in chunks. Yields (graph, session, int8 samples)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AvgPool2d(4), torch.nn.Flatten(),
                              torch.nn.Linear(16 * 16 * 16, 10)).eval()
    graph = edgekit.from_torch(torch.export.export(net, (torch.zeros(1, 3, 64, 64),)))
    x = np.random.default_rng(0).standard_normal((8, 3, 64, 64)).astype(np.float32)
    q = edgekit.quantize(graph, x)
    session = edgekit.deploy(q, "mcu:qemu")
    try:
        yield q, session, quantize_array(x[:3], q.tensors[q.inputs[0]].quant)
    finally:
        session.close()


def test_tensors_longer_than_a_frame_stream_bit_exact(streamed):
    """The board's memory, not the frame, limits the model: the 65,536 B layer output and the
    12,288 B input go through one-chunk buffers, bit-identical to the runtime, and the fit
    check counts those buffers."""
    from edgekit.converters.to_c import LINK_CHUNK_BYTES, footprint, link_bytes

    q, session, xq = streamed
    assert session.hello.max_payload == LINK_CHUNK_BYTES
    assert footprint(q).link_bytes == link_bytes(LINK_CHUNK_BYTES, len(q.nodes))
    with edgekit.deploy(q, "cpu") as cpu:
        np.testing.assert_array_equal(session.run(xq, raw=True), cpu.run(xq, raw=True))
        on_board, runtime = session.run_layers(xq[:1], raw=True), cpu.run_layers(xq[:1], raw=True)
    assert on_board[q.nodes[0].outputs[0]].nbytes == 65536
    for tensor, value in on_board.items():
        np.testing.assert_array_equal(value, runtime[tensor], err_msg=tensor)


@pytest.mark.parametrize("after", ["LOAD", "INFER_LAYERS"])
def test_a_reboot_mid_transfer_redoes_it(streamed, monkeypatch, after):
    """The fault: the board reboots after the first LOAD (the inputs it held are gone), or
    after computing a layer whose output is still to be READ. The board refuses to go on with
    what it no longer holds, and the transfer is done again: the result is still exact."""
    from edgekit.firmware_bridge import stream
    from edgekit.firmware_bridge.protocol import Cmd

    q, session, xq = streamed
    link = session.board.link
    real, fired, sent = link.request, [], []

    def request(cmd, payload=b""):
        sent.append(Cmd(cmd).name)
        reply = real(cmd, payload)
        if cmd == Cmd[after] and not fired:
            fired.append(cmd)
            link.reset()
        return reply

    monkeypatch.setattr(link, "request", request)
    first = q.nodes[0].outputs[0]
    with edgekit.deploy(q, "cpu") as cpu:
        expected = cpu.run_layers(xq[:1], raw=True)[first]
    got = stream.infer_layer(link, 0, xq[0].tobytes(), expected.nbytes)
    assert fired and link.stats["reboots"] == 0  # an expected reboot, not a link fault
    np.testing.assert_array_equal(np.frombuffer(got, np.int8).reshape(expected.shape), expected)
    # the transfer (3 LOADs, INFER_LAYERS, 16 READs of 4 KB) was done again after the reboot
    assert sent.count("INFER_LAYERS") == 2 and "RESET" in sent
    assert sent[-20:] == ["LOAD"] * 3 + ["INFER_LAYERS"] + ["READ"] * 16


def test_a_streamed_model_survives_link_faults(streamed):
    """The fault-injecting proxy on a model that streams: corrupted, dropped and duplicated
    bytes in 4 KB chunks and a reboot in the middle; never a wrong result."""
    import serial

    from edgekit.firmware_bridge import stream
    from edgekit.firmware_bridge.link import Link

    q, session, xq = streamed
    board = QemuBoard(session.firmware.elf)
    proxy = None
    try:
        board_port = int(board.link.port.portstr.rsplit(":", 1)[1])
        hello = board.hello
        board.link.close()
        board.link = None
        proxy = FaultyProxy(board_port, rate=1e-4, seed=3)
        link = Link(serial.serial_for_url(f"socket://127.0.0.1:{proxy.port}", timeout=0.05),
                    timeout=2.0, retries=10)
        link.last_hello = hello
        board.link = link
        with edgekit.deploy(q, "cpu") as cpu:
            expected = cpu.run(xq, raw=True)
        for i in range(8):
            proxy.reset_next = i == 2
            _, _, out = stream.infer(link, xq[i % len(xq)].tobytes())
            np.testing.assert_array_equal(np.frombuffer(out, np.int8), expected[i % len(xq)])
        print(f"\nstreamed link faults: injected {proxy.counts}; link {link.stats}")
        assert proxy.counts["resets"] == 1
        assert proxy.counts["dropped"] + proxy.counts["flipped"] + proxy.counts["duplicated"] > 0
    finally:
        if proxy is not None:
            proxy.close()
        board.stop()


def test_reply_timeouts_tell_a_busy_board_from_a_silent_one(streamed, monkeypatch):
    """The timeout comes from the model's cost (``timeout=`` overrides it). The fault: the
    emulator is frozen (SIGSTOP) once the board has acknowledged an inference, as a board
    computing far longer than expected; then frozen before a request, as a board that is gone.
    Each gets its own diagnosis, and the board works again once it runs."""
    import os
    import signal

    from edgekit.firmware_bridge.link import LinkError
    from edgekit.firmware_bridge.protocol import Cmd
    from edgekit.targets.mcu import LINK_TIMEOUT, TIMEOUT_MARGIN, expected_seconds

    q, session, xq = streamed
    expected = expected_seconds(q, "cortex-m3-qemu", emulated=True)
    assert session.board.link.compute_timeout == LINK_TIMEOUT + TIMEOUT_MARGIN * expected
    with pytest.raises(EdgekitError, match="timeout must be a number of seconds > 0"):
        edgekit.deploy(q, "mcu:qemu", timeout=0)
    with edgekit.deploy(q, "mcu:qemu", timeout=0.5) as short, edgekit.deploy(q, "cpu") as cpu:
        link, pid = short.board.link, short.board.pid
        assert link.compute_timeout == 0.5
        feed = link.decoder.feed

        def freeze_after_ack(data):
            frames = feed(data)
            if any(f.type == Cmd.ACK for f in frames):
                os.kill(pid, signal.SIGSTOP)
            return frames

        monkeypatch.setattr(link.decoder, "feed", freeze_after_ack)
        try:
            with pytest.raises(EdgekitError, match=r"acknowledged INFER [\d.]+ s ago and is "
                               r"still computing \(this model is expected to take about "
                               r"[\d.]+ s on it\).* pass a longer one \(deploy\(\.\.\., "
                               r"timeout=SECONDS\), --timeout SECONDS\)"):
                short.run(xq[:1], raw=True)
        finally:
            os.kill(pid, signal.SIGCONT)
        monkeypatch.setattr(link.decoder, "feed", feed)
        np.testing.assert_array_equal(short.run(xq[:1], raw=True), cpu.run(xq[:1], raw=True))
        link.retries = 1
        os.kill(pid, signal.SIGSTOP)
        try:
            with pytest.raises(LinkError, match=r"PING failed after 2 attempts \(no reply within"
                               r" 2.00 s; no reply within 2.00 s\): no board answers"):
                link.request(Cmd.PING)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert link.request(Cmd.PING, b"back") == b"back"


def test_expected_cost_covers_what_the_board_counts(model_on_board, streamed, digits):
    """The timeout's cost estimate, with its margin, is above the instructions the board
    really executes (repeatable -icount counts), so a busy board is not given up on early."""
    from edgekit.targets.mcu import EMULATED_IPS, TIMEOUT_MARGIN, expected_seconds

    _, graph, session = model_on_board
    q, big, xq = streamed
    for g, s, x in [(graph, session, digits.x_test[:1]), (q, big, xq[:1])]:
        estimate = expected_seconds(g, "cortex-m3-qemu", emulated=True) * EMULATED_IPS
        assert TIMEOUT_MARGIN * estimate > s.device_profile(x)["instructions"]


def test_firmware_of_another_protocol_is_refused(monkeypatch, tmp_path):
    """A board answering with the old protocol version (firmware built from sources that say
    2) is refused by the host with one line, and stopped."""
    import shutil

    from edgekit.firmware_bridge import build

    old = tmp_path / "firmware"
    shutil.copytree(build.FIRMWARE, old)
    header = old / "ek_protocol.h"
    header.write_text(header.read_text().replace("#define EK_PROTOCOL_VERSION 3",
                                                 "#define EK_PROTOCOL_VERSION 2"))
    monkeypatch.setattr(build, "FIRMWARE", old)
    with pytest.raises(EdgekitError, match=r"speaks protocol 2, this edgekit speaks 3: rebuild "
                                           r"and flash the firmware"):
        edgekit.deploy(tiny_graph(), "mcu:qemu")


def test_the_cli_passes_timeout_to_the_board(tmp_path, capsys):
    """``--timeout`` reaches the board's target from run, profile and deploy (a value it
    refuses shows that it got there)."""
    from edgekit.cli import main

    model = tmp_path / "tiny.ekm"
    tiny_graph().save(model)
    np.save(tmp_path / "x.npy", np.zeros((1, 8), np.float32))
    for argv in (["run", str(model), "--input", str(tmp_path / "x.npy")],
                 ["profile", str(model), "--runs", "1"], ["deploy", str(model)]):
        assert main([*argv, "--target", "mcu:qemu", "--timeout", "-1"]) == 2
        assert "timeout must be a number of seconds > 0, got -1.0" in capsys.readouterr().err
