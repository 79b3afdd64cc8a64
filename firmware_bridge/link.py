"""A request/reply link to the firmware over pyserial (a real port, or ``socket://`` to QEMU).

Every request gets a fresh sequence number; only a reply with that number, the matching type and
intact CRCs is accepted, so replies to earlier attempts, garbage and corrupted frames are
skipped. A request that gets no acceptable reply within ``timeout`` (or sees a corrupted frame
arrive instead, gets an error frame saying it arrived corrupted, or sees the board reboot) is
sent again at once, at most ``retries`` times; then ``LinkError`` says what happened. Resending
is always safe: every command is idempotent, and a late reply to an earlier attempt has an
older sequence number and is ignored.

A request that computes is acknowledged by the board (an ACK frame) before it starts; from then
on the link waits ``compute_timeout`` (derived from the model's cost by ``targets.mcu``) for
the reply. If that passes too, a PING tells a board still busy computing (no answer: the error
says so, and that a longer timeout is the fix) from one whose reply was lost (it answers: the
request is sent again).
"""

from __future__ import annotations

import time
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.firmware_bridge.protocol import ERRORS, REPLY, Cmd, Decoder, Frame, Hello, encode


class LinkError(EdgekitError):
    """The board did not answer a request correctly after every retry."""


class BoardError(EdgekitError):
    """The board understood a request and refused it (wrong input size, no such step);
    ``code``: the error frame's code (``protocol.ERRORS``)."""

    def __init__(self, message: str, code: int = 0):
        super().__init__(message)
        self.code = code


class TransferLost(LinkError):
    """The board no longer holds what a streamed transfer loaded or computed (it rebooted, or
    a chunk went missing): the whole transfer is done again (``stream.py``)."""


class BoardBusy(LinkError):
    """The board acknowledged a request and is still computing it after ``compute_timeout``."""


_RETRYABLE_ERRORS = {1, 2}  # the request arrived corrupted
_LOST = 7  # EK_ERR_STATE


class Link:
    def __init__(self, port: Any, timeout: float = 1.0, retries: int = 8,
                 compute_timeout: float | None = None):
        self.port, self.timeout, self.retries = port, timeout, retries
        self.compute_timeout = timeout if compute_timeout is None else compute_timeout
        self.expected_s: float | None = None  # the model's expected seconds on the board
        self.decoder = Decoder()
        self.seq = 0
        self.stats = {"requests": 0, "retries": 0, "dropped_frames": 0, "reboots": 0}
        self.last_hello: Hello | None = None

    def _next_seq(self) -> int:
        self.seq = self.seq % 255 + 1  # 0 is the board's unasked HELLO
        return self.seq

    def _read_frames(self, deadline: float) -> list[Frame]:
        self.port.timeout = max(0.0, min(0.05, deadline - time.monotonic()))
        data = self.port.read(max(1, self.port.in_waiting))
        frames = self.decoder.feed(data) if data else []
        self.stats["dropped_frames"] = self.decoder.dropped
        return frames

    def _drain(self) -> None:
        """Take in what has already arrived, so that it counts as older than the next request."""
        while self.port.in_waiting:
            self.decoder.feed(self.port.read(self.port.in_waiting))

    def wait_hello(self, timeout: float) -> Hello:
        """The HELLO a board sends when it boots (or a reply to asking for one)."""
        deadline = time.monotonic() + timeout
        self.port.write(encode(Frame(Cmd.HELLO, self._next_seq())))
        asked = self.seq
        while time.monotonic() < deadline:
            for frame in self._read_frames(deadline):
                if frame.type in (Cmd.HELLO, Cmd.HELLO | REPLY):
                    self.last_hello = Hello.parse(frame.payload)
                    self.decoder.max_payload = self.last_hello.max_payload
                    return self.last_hello
            if time.monotonic() > deadline - timeout / 2 and asked == self.seq:
                self.port.write(encode(Frame(Cmd.HELLO, self._next_seq())))
        raise LinkError(f"the board sent no HELLO within {timeout:.1f} s: is the firmware "
                        "running and the port right?")

    def request(self, cmd: int, payload: bytes = b"") -> bytes:
        """The reply payload to ``cmd``; retried on timeouts, corruption and reboots."""
        self.stats["requests"] += 1
        if self.last_hello and len(payload) > self.last_hello.max_payload:
            raise LinkError(f"a {Cmd(cmd).name} payload of {len(payload)} B exceeds the "
                            f"firmware's {self.last_hello.max_payload} B")
        problems: list[str] = []
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
            self._drain()
            seq, since = self._next_seq(), self.decoder.position
            self.port.write(encode(Frame(cmd, seq, payload)))
            outcome = self._await_reply(cmd, seq, since)
            if isinstance(outcome, bytes):
                return outcome
            problems.append(outcome)
            self.decoder.resync()  # what it released began before the next attempt: stale
        silent = all(p.startswith("no reply") for p in problems)
        raise LinkError(f"command {Cmd(cmd).name} failed after {self.retries + 1} attempts "
                        f"({'; '.join(problems[-3:])}): {'no board answers; ' * silent}check "
                        "the cable/port and the firmware")

    def reset(self, timeout: float = 10.0) -> Hello:
        """Reboot the board (RESET) and wait for the HELLO it sends once it is up again."""
        self.request(Cmd.RESET)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for frame in self._read_frames(deadline):
                if frame.type == Cmd.HELLO:
                    self.last_hello = Hello.parse(frame.payload)
                    return self.last_hello
        raise LinkError(f"the board did not come back within {timeout:.1f} s of a RESET")

    def _await_reply(self, cmd: int, seq: int, since: int) -> bytes | str:
        """The reply payload, or why this attempt failed (a string). Frames that began before
        the request was sent (``since``, a stream position) are older than it: a sequence
        number seen 255 requests ago, released late by the decoder, is not this reply."""
        deadline = time.monotonic() + self.timeout
        dropped = self.decoder.dropped
        acked: float | None = None  # when the board acknowledged the request
        while time.monotonic() < deadline:
            frames = self._read_frames(deadline)
            if self.decoder.dropped > dropped and not frames:  # likely our reply, corrupted
                return "a corrupted frame arrived"
            for frame in frames:
                if frame.at < since:
                    continue
                if frame.type == Cmd.HELLO:  # the board rebooted: the request was lost
                    self.stats["reboots"] += 1
                    self.last_hello = Hello.parse(frame.payload)
                    return "the board rebooted"
                if frame.seq != seq:
                    continue
                if frame.type == Cmd.ERROR:
                    code = frame.payload[0] if frame.payload else 0
                    if code in _RETRYABLE_ERRORS:
                        return f"the board received a corrupted request ({ERRORS[code]})"
                    why = frame.payload[1:].decode("ascii", "replace")
                    if code == _LOST:
                        raise TransferLost(f"{Cmd(cmd).name}: {why}")
                    raise BoardError(f"the board refused {Cmd(cmd).name}: {why}", code)
                if frame.type == Cmd.ACK and acked is None:
                    acked = time.monotonic()
                    deadline = acked + self.compute_timeout
                if frame.type == cmd | REPLY:
                    return frame.payload
        if acked is None:
            return f"no reply within {self.timeout:.2f} s"
        if self.decoder.buffer:  # part of a frame, the rest lost: likely our reply
            return "a corrupted frame arrived"
        return self._busy_or_lost(cmd, seq, since, acked)

    def _busy_or_lost(self, cmd: int, seq: int, since: int, acked: float) -> bytes | str:
        """After an ACK and ``compute_timeout`` without a reply: PING the board. A board still
        computing cannot answer: ``BoardBusy``. One that answers has finished and its reply
        was lost: the request is sent again. The reply itself may still come meanwhile."""
        ping = self._next_seq()
        self.port.write(encode(Frame(Cmd.PING, ping)))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for frame in self._read_frames(deadline):
                if frame.at < since:
                    continue
                if frame.type == Cmd.HELLO:
                    self.stats["reboots"] += 1
                    self.last_hello = Hello.parse(frame.payload)
                    return "the board rebooted"
                if frame.seq == seq and frame.type == cmd | REPLY:
                    return frame.payload
                if frame.seq == ping and frame.type == Cmd.PING | REPLY:
                    return "the board finished but its reply was lost"
        expected = (f" (this model is expected to take about {self.expected_s:.1f} s on it)"
                    if self.expected_s else "")
        raise BoardBusy(f"the board acknowledged {Cmd(cmd).name} "
                        f"{time.monotonic() - acked:.1f} s ago and is still computing"
                        f"{expected}: it is alive but slower than the "
                        f"{self.compute_timeout:.1f} s reply timeout; pass a longer one "
                        "(deploy(..., timeout=SECONDS), --timeout SECONDS)")

    def close(self) -> None:
        self.port.close()
