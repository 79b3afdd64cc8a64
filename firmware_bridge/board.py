"""Boards running edgekit's firmware: ``QemuBoard`` (QEMU's mps2-an385, a Cortex-M3, started
and stopped here) and ``SerialBoard`` (a real board flashed with the same firmware, on a port).

Both open a ``Link`` and wait for the firmware's HELLO. QEMU does not exit when the host
disconnects, so ``QemuBoard.stop`` asks the firmware to exit (semihosting), then kills the
process by its PID; every started board is also stopped at interpreter exit.
"""

from __future__ import annotations

import atexit
import re
import shutil
import subprocess
import threading
from pathlib import Path

import serial

from edgekit.errors import EdgekitError
from edgekit.firmware_bridge.link import Link, LinkError
from edgekit.firmware_bridge.protocol import Cmd, Frame, Hello, encode

QEMU = "qemu-system-arm"
ICOUNT_SHIFT = 3  # one emulated instruction = 2^3 ns of virtual time: repeatable counts
_STARTED: set[QemuBoard] = set()  # strong references: a board is stopped even if dropped


def qemu_missing() -> str | None:
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed: apt-get install --no-install-recommends qemu-system-arm"
    return None


class Board:
    """A connected board: ``link`` for requests, ``hello`` as the firmware introduced itself."""

    link: Link
    hello: Hello

    def stop(self) -> None:
        self.link.close()

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SerialBoard(Board):
    """A real board on ``port`` (e.g. /dev/ttyACM0), already flashed with the model's ELF."""

    def __init__(self, port: str, baudrate: int = 115200, timeout: float = 2.0):
        try:
            device = serial.serial_for_url(port, baudrate=baudrate, timeout=0.05)
        except (serial.SerialException, OSError) as err:
            raise EdgekitError(f"cannot open {port}: {err}") from None
        self.link = Link(device, timeout=timeout)
        try:
            self.hello = self.link.wait_hello(timeout=5.0)
        except LinkError:
            self.link.close()
            raise


class QemuBoard(Board):
    """The emulated mps2-an385 running ``elf``, connected over QEMU's socket chardev."""

    def __init__(self, elf: str | Path, timeout: float = 2.0, retries: int = 8):
        why = qemu_missing()
        if why:
            raise EdgekitError(why)
        self.process = subprocess.Popen(
            [QEMU, "-M", "mps2-an385", "-nodefaults", "-display", "none", "-monitor", "none",
             "-icount", f"shift={ICOUNT_SHIFT}", "-semihosting-config", "enable=on,target=native",
             "-kernel", str(elf), "-chardev",
             "socket,id=s0,host=127.0.0.1,port=0,server=on,wait=on,nodelay=on",
             "-serial", "chardev:s0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _STARTED.add(self)
        self.link: Link | None = None
        try:
            port = self._port()
            self.link = Link(serial.serial_for_url(f"socket://127.0.0.1:{port}", timeout=0.05),
                             timeout=timeout, retries=retries)
            self.hello = self.link.wait_hello(timeout=10.0)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def _port(self, timeout: float = 10.0) -> int:
        """The TCP port QEMU chose, from the line it prints on stderr."""
        found: list[str] = []

        def read() -> None:
            for raw in self.process.stderr:
                line = raw.decode(errors="replace")
                found.append(line)
                if re.search(r"tcp:127\.0\.0\.1:(\d+)", line):
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        for line in found:
            match = re.search(r"tcp:127\.0\.0\.1:(\d+)", line)
            if match:
                return int(match.group(1))
        raise EdgekitError(f"QEMU did not start: {''.join(found)[-2000:] or 'no output'}")

    def stop(self) -> None:
        """Semihosting exit through the firmware, then kill by PID; safe to call twice."""
        if self.link is not None:
            try:
                self.link.port.write(encode(Frame(Cmd.SHUTDOWN, 0)))
            except (OSError, serial.SerialException):
                pass
            self.link.close()
            self.link = None
        if self.process.poll() is None:
            try:
                self.process.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5.0)
        if self.process.stderr:
            self.process.stderr.close()
        _STARTED.discard(self)


@atexit.register
def _stop_all() -> None:
    for board in list(_STARTED):
        board.stop()
