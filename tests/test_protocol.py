"""The frame protocol and the link, without a board: encoding, decoding through garbage and
corruption, and the link's retries against a scripted port."""

from __future__ import annotations

import random
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekit.errors import EdgekitError
from edgekit.firmware_bridge.link import BoardBusy, BoardError, Link, LinkError
from edgekit.firmware_bridge.protocol import (
    MAX_PAYLOAD,
    PROTOCOL,
    REPLY,
    SYNC,
    Cmd,
    Decoder,
    Frame,
    Hello,
    check_protocol,
    crc8,
    encode,
    parse_infer,
)

frames = st.builds(Frame, st.integers(0, 255), st.integers(0, 255), st.binary(max_size=300))


@given(st.lists(frames, max_size=5), st.binary(max_size=50))
def test_frames_survive_garbage_between_them(items, garbage):
    stream = b"".join(garbage + encode(f) for f in items)
    assert Decoder().feed(stream) == items


@given(frames, st.integers(0, 10**6))
def test_bytes_in_any_chunks(frame, seed):
    data, rng, decoder, out = encode(frame), random.Random(seed), Decoder(), []
    i = 0
    while i < len(data):
        n = rng.randint(1, 7)
        out += decoder.feed(data[i:i + n])
        i += n
    assert out == [frame]


@settings(max_examples=300)
@given(frames, st.data())
def test_a_corrupted_frame_is_never_accepted(frame, data):
    raw = bytearray(encode(frame))
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] ^= 1 << data.draw(st.integers(0, 7))
    # dropped, and the decoder resynchronises on the next frame
    assert Decoder().feed(bytes(raw) + encode(Frame(1, 2, b"next"))) == [Frame(1, 2, b"next")]


def test_layout_and_limits():
    raw = encode(Frame(Cmd.PING, 7, b"ab"))
    assert raw[:2] == SYNC and raw[2:6] == bytes([2, 7, 2, 0]) and raw[6] == crc8(raw[2:6])
    assert struct.unpack("<I", raw[-4:])[0] == zlib.crc32(raw[2:6] + b"ab")
    with pytest.raises(ValueError):
        encode(Frame(Cmd.PING, 0, bytes(MAX_PAYLOAD + 1)))
    head = struct.pack("<BBH", 2, 0, 4097)  # a valid header, longer than this firmware takes
    assert Decoder(max_payload=4096).feed(SYNC + head + bytes([crc8(head)]) + bytes(10)) == []


def test_hello_and_infer_parsing():
    payload = struct.pack("<HHIIIIH", 1, 4096, 2560, 25_000_000, 256, 10, 6) + b"0123456789abcdef"
    hello = Hello.parse(payload + b"fw")
    assert (hello.arena_bytes, hello.steps, hello.model_hash, hello.firmware) == (
        2560, 6, "0123456789abcdef", "fw")
    total, steps, out = parse_infer(struct.pack("<3I", 30, 10, 20) + b"xy", 2)
    assert (total, steps, out) == (30, [10, 20], b"xy")


class ScriptedPort:
    """A fake serial port: each written request frame is answered by ``respond``."""

    def __init__(self, respond):
        self.respond, self.pending, self.timeout = respond, b"", 0.0
        self.decoder = Decoder()

    @property
    def in_waiting(self) -> int:
        return len(self.pending)

    def write(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            self.pending += self.respond(frame)

    def read(self, n: int) -> bytes:
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def close(self) -> None:
        pass


def echo(frame: Frame) -> bytes:
    return encode(Frame(frame.type | REPLY, frame.seq, frame.payload))


def test_link_retries_until_an_intact_reply():
    attempts = []

    def flaky(frame):
        attempts.append(frame.seq)
        good = echo(frame)
        if len(attempts) == 1:
            return good[:-1] + bytes([good[-1] ^ 1])  # corrupted
        if len(attempts) == 2:
            return encode(Frame(Cmd.PING | REPLY, (frame.seq + 9) % 256, b"stale"))
        return b"\x00garbage" + good

    link = Link(ScriptedPort(flaky), timeout=0.05, retries=3)
    assert link.request(Cmd.PING, b"hi") == b"hi"
    assert len(set(attempts)) == 3 and link.stats["retries"] == 2
    garbled = Link(ScriptedPort(lambda frame: echo(frame)[:-1] + bytes([echo(frame)[-1] ^ 1])),
                   timeout=0.05, retries=1)
    with pytest.raises(LinkError, match=r"\(a corrupted frame arrived; a corrupted frame "
                                        r"arrived\): check the cable"):
        garbled.request(Cmd.PING, b"hi")  # a board answers: not "no board answers"


def test_link_gives_up_with_a_clear_error():
    link = Link(ScriptedPort(lambda frame: b""), timeout=0.02, retries=2)
    with pytest.raises(LinkError, match="PING failed after 3 attempts .*: no board answers"):
        link.request(Cmd.PING)
    assert issubclass(LinkError, EdgekitError)


def test_board_refusals_are_not_retried():
    def refuse(frame):
        return encode(Frame(Cmd.ERROR, frame.seq, bytes([4]) + b"input size differs"))

    link = Link(ScriptedPort(refuse), timeout=0.05, retries=5)
    with pytest.raises(BoardError, match="input size differs"):
        link.request(Cmd.INFER, b"x")
    assert link.stats["retries"] == 0


def ack(frame: Frame) -> bytes:
    return encode(Frame(Cmd.ACK, frame.seq))


def test_an_acknowledged_request_whose_reply_was_lost_is_sent_again():
    """ACK, then no reply: the board answers a PING, so it is idle and the reply was lost."""
    infers = []

    def respond(frame):
        if frame.type == Cmd.PING:
            return echo(frame)
        infers.append(frame.seq)
        return ack(frame) + (echo(frame) if len(infers) > 1 else b"")

    link = Link(ScriptedPort(respond), timeout=0.05, retries=3, compute_timeout=0.05)
    assert link.request(Cmd.INFER, b"x") == b"x"
    assert len(infers) == 2 and link.stats["retries"] == 1


def test_a_board_busy_after_its_ack_is_told_from_a_silent_one():
    """ACK, then nothing, not even to a PING: the board is computing; the error says so and
    how to wait longer, at once (resending would queue behind the computation)."""
    infers = []

    def respond(frame):
        if frame.type == Cmd.INFER:
            infers.append(frame.seq)
            return ack(frame)
        return b""

    link = Link(ScriptedPort(respond), timeout=0.05, retries=3, compute_timeout=0.1)
    link.expected_s = 4.6
    with pytest.raises(BoardBusy, match=r"acknowledged INFER 0\.\d s ago and is still computing "
                       r"\(this model is expected to take about 4\.6 s on it\): it is alive but "
                       r"slower than the 0\.1 s reply timeout; pass a longer one"):
        link.request(Cmd.INFER, b"x")
    assert len(infers) == 1
    silent = Link(ScriptedPort(lambda frame: b""), timeout=0.02, retries=1)
    with pytest.raises(LinkError, match="no reply within 0.02 s; no reply within 0.02 s\\): no "
                                        "board answers"):
        silent.request(Cmd.INFER, b"x")


def test_firmware_of_another_protocol_is_refused():
    payload = struct.pack("<HHIIIIH", PROTOCOL - 1, 4096, 2560, 25_000_000, 256, 10, 6)
    old = Hello.parse(payload + b"0123456789abcdefedgekit-fw 0.1")
    with pytest.raises(EdgekitError, match=f"edgekit-fw 0.1\\) speaks protocol {PROTOCOL - 1}, "
                                           f"this edgekit speaks {PROTOCOL}: rebuild"):
        check_protocol(old)
    check_protocol(Hello.parse(struct.pack("<HHIIIIH", PROTOCOL, 64, 0, 1, 1, 1, 1) + bytes(16)))


def test_a_frame_released_late_by_a_false_header_is_not_taken_for_the_reply():
    """A header that passes its CRC-8 by chance holds the frames after it until its length has
    arrived. One of them may carry the sequence number of a later request (after 255 requests
    it comes round again): it was sent before that request, so it cannot be its reply."""
    head = bytes([Cmd.PING | REPLY, 7]) + struct.pack("<H", 40)
    false_header = SYNC + head + bytes([crc8(head)])

    def respond(frame):
        if frame.seq == 1:  # the reply, then a false header holding a stale frame with seq 2
            return (echo(frame) + false_header
                    + encode(Frame(Cmd.PING | REPLY, 2, b"stale")))
        return bytes(40) + echo(frame)  # completes the false header's length, then the reply

    link = Link(ScriptedPort(respond), timeout=0.05, retries=0)
    assert link.request(Cmd.PING, b"one") == b"one"
    assert link.request(Cmd.PING, b"two") == b"two"


def test_a_false_header_costs_one_attempt_not_the_request():
    """A header that passes its CRC-8 by chance and claims a long payload would hold every
    reply behind it until that many bytes arrived; a failed attempt gives it up."""
    head = bytes([Cmd.PING | REPLY, 7]) + struct.pack("<H", 4000)

    def respond(frame):
        if frame.seq == 1:
            return echo(frame) + SYNC + head + bytes([crc8(head)])
        return echo(frame)

    link = Link(ScriptedPort(respond), timeout=0.05, retries=2)
    assert link.request(Cmd.PING, b"one") == b"one"
    assert link.request(Cmd.PING, b"two") == b"two"
    assert link.stats["retries"] == 1
