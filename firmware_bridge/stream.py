"""Inferences whose tensors may be longer than one frame (protocol 3, ``protocol.py``).

An input that does not fit the request's frame is LOADed in chunks first, and the request
carries its CRC-32 instead, which the board checks against what it holds; a result that does
not fit the reply's frame comes as its CRC-32 and is READ in chunks, then checked against it.
So the firmware's frame buffers stay one chunk long whatever the model, and every byte of a
streamed tensor is tied to the inference that used or made it. When the board no longer holds
what the transfer put there or computed (it rebooted between two chunks, a chunk went missing),
the whole transfer is done again, at most ``link.retries`` times.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from typing import TypeVar

from edgekit.firmware_bridge.link import Link, LinkError, TransferLost
from edgekit.firmware_bridge.protocol import OUTPUTS, Cmd, parse_infer

T = TypeVar("T")


def infer(link: Link, sample: bytes, path: tuple[int, int] | None = None
          ) -> tuple[int, list[int], bytes]:
    """INFER one sample: (total ticks, ticks per step, the outputs' bytes). ``path``: (index,
    steps) of an anytime model's path: INFER_PATH, which runs only that path's ``steps``."""
    hello = link.last_hello
    cmd, head, steps = ((Cmd.INFER, b"", hello.steps) if path is None else
                        (Cmd.INFER_PATH, struct.pack("<H", path[0]), path[1]))

    def attempt() -> tuple[int, list[int], bytes]:
        total, ticks, rest = parse_infer(link.request(cmd, _inputs(link, head, sample)), steps)
        if 4 * (steps + 1) + hello.output_bytes <= hello.max_payload:
            return total, ticks, rest
        return total, ticks, _read(link, OUTPUTS, hello.output_bytes, rest)

    return _transfer(link, attempt)


def infer_layer(link: Link, step: int, sample: bytes, size: int) -> bytes:
    """INFER_LAYERS: the ``size`` bytes of step ``step``'s output for one sample."""

    def attempt() -> bytes:
        reply = link.request(Cmd.INFER_LAYERS, _inputs(link, struct.pack("<H", step), sample))
        if 2 + size <= link.last_hello.max_payload:
            return reply[2:]
        return _read(link, step, size, reply[2:])

    return _transfer(link, attempt)


def _inputs(link: Link, head: bytes, sample: bytes) -> bytes:
    """A computing request's payload: ``head`` and the sample when they fit one frame; else
    the sample LOADed in chunks, and ``head`` with its CRC-32."""
    limit = link.last_hello.max_payload
    if len(head) + len(sample) <= limit:
        return head + sample
    chunk = limit - 4
    for offset in range(0, len(sample), chunk):
        link.request(Cmd.LOAD, struct.pack("<I", offset) + sample[offset:offset + chunk])
    return head + struct.pack("<I", zlib.crc32(sample))


def _read(link: Link, what: int, size: int, crc: bytes) -> bytes:
    """The ``size`` bytes of a result (``OUTPUTS`` or a step's output), READ in chunks and
    checked against the CRC-32 the board sent with the reply."""
    chunk = link.last_hello.max_payload
    data = b"".join(link.request(Cmd.READ, struct.pack("<HIH", what, offset,
                                                       min(chunk, size - offset)))
                    for offset in range(0, size, chunk))
    if zlib.crc32(data) != struct.unpack("<I", crc[:4])[0]:
        raise TransferLost("the chunks read differ from the result the board computed")
    return data


def _transfer(link: Link, attempt: Callable[[], T]) -> T:
    """``attempt()``, done again from the start while the board has lost its part of it."""
    lost: list[str] = []
    for _ in range(link.retries + 1):
        try:
            return attempt()
        except TransferLost as err:
            lost.append(str(err))
    raise LinkError(f"a streamed transfer failed {link.retries + 1} times ({'; '.join(lost[-2:])})"
                    ": the board keeps losing what it was sent; check the cable/port and the "
                    "board's power")
