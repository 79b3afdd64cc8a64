"""The host side of edgekit's frame protocol (the firmware side is ``firmware/ek_protocol.c``).

A frame is ``A5 5A | type | seq | length (u16 LE) | CRC-8 | payload | CRC-32 (LE)``: the CRC-8
guards the header so a corrupted length is never trusted, the CRC-32 (zlib's) covers type,
sequence number, length and payload, so a reply is accepted only if every byte arrived intact.
A reply has the request's seq and ``type | 0x80``; an error frame has type ``ERROR``.

HELLO is also INFO: the firmware sends it unasked at boot (seq 0) and answers it any time with
its protocol version, link buffer size, arena size, tick rate, input/output sizes, step count,
model hash and firmware version (``Hello``).

STATS (protocol 2) answers with what the model counted in its last inference, u32 LE each:
nothing for an int8 model; for a spiking one (``converters.to_c_snn``) its synaptic operations,
then the ticks each node took over the T time steps (``parse_stats``).

Protocol 3 lets the board's memory, not the frame, limit the model. The firmware's buffers hold
one frame of at most ``to_c.LINK_CHUNK_BYTES``; a tensor longer than what fits streams
(``stream.py``): LOAD (u32 offset, bytes) writes the inputs in chunks and INFER/INFER_LAYERS
then carry the CRC-32 of all of them instead, which the board checks against what it holds; a
reply whose tensor does not fit carries its CRC-32, and READ (u16 what: ``OUTPUTS`` or a step,
u32 offset, u16 length) reads it in chunks. Every request that computes is first acknowledged
(an ``ACK`` frame with its seq), so the host knows the board is alive and busy while it waits.

INFER_PATH (an anytime model, ``converters.to_c_anytime``): u16 path index in the model's
sub-network table, then as INFER; the reply is INFER's, with the ticks of that path's steps
only. A firmware built before it answers error 3 (unknown command); the host says to rebuild.

TRAIN_CONFIG..TRAIN_INFER (0x0B..0x0F; a model with a trainable float head over its int8
backbone, ``converters.to_c_train``, ``edgekit.learn.board``): TRAIN_CONFIG sets the optimizer
and clears the training state; TRAIN_STEP (u32 index, flags, label, mini-batch count, lr, then
the inputs as INFER) trains on one sample, and a repeated index is answered, not applied
again; TRAIN_READ/TRAIN_WRITE move the head's float32 weights in chunks; TRAIN_INFER gives the
head's logits. A firmware without a trainable head answers error 3 (unknown command).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum

from edgekit.errors import EdgekitError

SYNC = b"\xa5\x5a"
HEADER = 7  # sync, type, seq, length, CRC-8
TRAILER = 4
MAX_PAYLOAD = 65535  # the u16 length field; each firmware says its own limit in HELLO
REPLY = 0x80
PROTOCOL = 3  # EK_PROTOCOL_VERSION: what this host speaks
OUTPUTS = 0xFFFF  # READ's selector of the model's outputs (else a step index)


class Cmd(IntEnum):
    HELLO = 0x01
    PING = 0x02
    INFER = 0x03
    INFER_LAYERS = 0x04
    RESET = 0x05
    SHUTDOWN = 0x06  # emulator only: the firmware exits through semihosting
    STATS = 0x07  # the model's counters of the last inference
    LOAD = 0x08  # protocol 3: write a chunk of the inputs
    READ = 0x09  # protocol 3: read a chunk of the outputs or of a step's output
    INFER_PATH = 0x0A  # an anytime model's path: the firmware runs only that path's steps
    TRAIN_CONFIG = 0x0B  # a trainable head's optimizer; clears its training state
    TRAIN_STEP = 0x0C  # one sample's forward, backward and (a mini-batch's last) update
    TRAIN_READ = 0x0D  # a chunk of the head's float32 weights
    TRAIN_WRITE = 0x0E  # write a chunk of them
    TRAIN_INFER = 0x0F  # the backbone and the float head: logits
    ACK = 0x7E  # protocol 3: sent by the board when it starts computing a request
    ERROR = 0x7F


ERRORS = {1: "payload CRC mismatch", 2: "payload too long", 3: "unknown command",
          4: "wrong input size", 5: "no such step", 6: "outside the tensor",
          7: "the board no longer holds the transfer's data"}


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes = b""
    at: int = field(default=0, compare=False)  # where it began in the received stream


def crc8(data: bytes) -> int:
    """CRC-8, polynomial 0x07 (ek_crc8)."""
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def encode(frame: Frame) -> bytes:
    if len(frame.payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(frame.payload)} bytes exceeds {MAX_PAYLOAD}")
    head = struct.pack("<BBH", frame.type, frame.seq & 0xFF, len(frame.payload))
    return (SYNC + head + bytes([crc8(head)]) + frame.payload
            + struct.pack("<I", zlib.crc32(head + frame.payload)))


class Decoder:
    """Frames out of a byte stream: skips garbage, drops frames with a bad CRC and counts them,
    and resynchronises on the next sync bytes. A header that passes its CRC-8 by chance holds
    the bytes after it until its length has arrived; the frames among them then come out late,
    so each frame says where it began (``Frame.at``) and a reader can tell a reply from one
    that was sent before its request (``position``)."""

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self.buffer = bytearray()
        self.start = 0  # stream position of buffer[0]
        self.dropped = 0
        self.max_payload = max_payload

    @property
    def position(self) -> int:
        """How many bytes have been received."""
        return self.start + len(self.buffer)

    def resync(self) -> None:
        """Give up on the frame begun in the buffer (a header that passed its CRC-8 by chance
        waits for a length that may never come) and read on from its next byte."""
        if self.buffer:
            self.dropped += 1
            self._skip(1)
            self.feed(b"")

    def _skip(self, n: int) -> None:
        del self.buffer[:n]
        self.start += n

    def feed(self, data: bytes) -> list[Frame]:
        self.buffer += data
        frames = []
        while True:
            start = self.buffer.find(SYNC)
            if start < 0:
                self._skip(len(self.buffer) - 1 if self.buffer[-1:] == SYNC[:1]
                           else len(self.buffer))
                return frames
            self._skip(start)
            if len(self.buffer) < HEADER:
                return frames
            head = bytes(self.buffer[2:6])
            length = struct.unpack("<H", head[2:])[0]
            if crc8(head) != self.buffer[6] or length > self.max_payload:
                self.dropped += 1
                self._skip(1)
                continue
            end = HEADER + length + TRAILER
            if len(self.buffer) < end:
                return frames
            payload = bytes(self.buffer[HEADER:HEADER + length])
            (crc,) = struct.unpack("<I", self.buffer[end - TRAILER:end])
            if zlib.crc32(head + payload) != crc:
                self.dropped += 1
                self._skip(1)
                continue
            frames.append(Frame(head[0], head[1], payload, self.start))
            self._skip(end)


@dataclass(frozen=True)
class Hello:
    """What the firmware says about itself (HELLO reply, also sent unasked at boot)."""

    protocol: int
    max_payload: int
    arena_bytes: int
    tick_hz: int
    input_bytes: int
    output_bytes: int
    steps: int
    model_hash: str
    firmware: str

    @classmethod
    def parse(cls, payload: bytes) -> Hello:
        fields = struct.unpack("<HHIIIIH", payload[:22])
        return cls(*fields, payload[22:38].decode("ascii", "replace"),
                   payload[38:].decode("ascii", "replace"))


def check_protocol(hello: Hello) -> None:
    """Refuse a board whose firmware speaks another protocol version than this host."""
    if hello.protocol != PROTOCOL:
        raise EdgekitError(f"the board's firmware ({hello.firmware}) speaks protocol "
                           f"{hello.protocol}, this edgekit speaks {PROTOCOL}: rebuild and flash "
                           "the firmware for the model (README, 'Microcontrollers')")


def parse_infer(payload: bytes, steps: int) -> tuple[int, list[int], bytes]:
    """INFER reply: (total ticks, ticks per step, output bytes)."""
    ticks = struct.unpack(f"<{steps + 1}I", payload[:4 * (steps + 1)])
    return ticks[0], list(ticks[1:]), payload[4 * (steps + 1):]


def parse_stats(payload: bytes) -> list[int]:
    """STATS reply: the model's u32 counters of its last inference."""
    return list(struct.unpack(f"<{len(payload) // 4}I", payload))
