"""Boards running edgekit's firmware: ``QemuBoard`` (one of QEMU's Arm boards of
``firmware_bridge.ports``, the mps2-an385 Cortex-M3 by default, started and stopped here) and
``SerialBoard`` (a real board flashed with the same firmware, on a port).

Both open a ``Link`` (``timeout``: the link's reply timeout; ``compute_timeout``: how long
an acknowledged inference may take) and wait for the firmware's HELLO. QEMU does not exit when
the host disconnects, so ``QemuBoard.stop`` asks the firmware to exit (semihosting), then kills the
process by its PID; every started board is also stopped at interpreter exit. A host that dies
without either (``kill -9``, a crash) takes its boards with it on Linux: QEMU is started with
the kernel's parent-death signal (``die_with_host``), so no emulator is left running alone.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import serial

from edgekit.errors import EdgekitError
from edgekit.firmware_bridge.link import Link, LinkError
from edgekit.firmware_bridge.ports import DEFAULT, PORTS
from edgekit.firmware_bridge.protocol import Cmd, Frame, Hello, encode

QEMU = "qemu-system-arm"
ICOUNT_SHIFT = 3  # one emulated instruction = 2^3 ns of virtual time: repeatable counts
_STARTED: set[QemuBoard] = set()  # strong references: a board is stopped even if dropped


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_host() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel SIGKILL the child when the thread that started it
    ends (``prctl(PR_SET_PDEATHSIG)``), or None off Linux. ``prctl`` is looked up here, before
    the fork, so the child only makes the call; if the host died before it, the child exits."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    host = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != host:
            os._exit(1)

    return preexec


_SPAWNER: queue.SimpleQueue | None = None
_SPAWNER_LOCK = threading.Lock()


def spawn(args: list[str], **popen: Any) -> subprocess.Popen:
    """``subprocess.Popen(args, preexec_fn=die_with_host(), **popen)``, run on one daemon thread
    that lives as long as the process: the parent-death signal follows the *thread* that
    forked, so a board opened from a short-lived thread would otherwise die with that thread."""
    global _SPAWNER
    with _SPAWNER_LOCK:
        if _SPAWNER is None:
            _SPAWNER = queue.SimpleQueue()
            threading.Thread(target=_serve, args=(_SPAWNER,), name="edgekit-board-spawner",
                             daemon=True).start()
    future: Future = Future()
    _SPAWNER.put((future, lambda: subprocess.Popen(args, preexec_fn=die_with_host(), **popen)))
    return future.result()


def _serve(requests: queue.SimpleQueue) -> None:
    while True:
        future, call = requests.get()
        try:
            future.set_result(call())
        except BaseException as err:  # handed to the caller, raised there
            future.set_exception(err)


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

    def __init__(self, port: str, baudrate: int = 115200, timeout: float = 2.0,
                 retries: int = 8, compute_timeout: float | None = None):
        try:
            device = serial.serial_for_url(port, baudrate=baudrate, timeout=0.05)
        except (serial.SerialException, OSError) as err:
            raise EdgekitError(f"cannot open {port}: {err}") from None
        self.link = Link(device, timeout=timeout, retries=retries,
                         compute_timeout=compute_timeout)
        try:
            self.hello = self.link.wait_hello(timeout=5.0)
        except LinkError:
            self.link.close()
            raise


class QemuBoard(Board):
    """The emulated board of core ``board`` (``ports.PORTS``) running ``elf``, connected over
    QEMU's socket chardev."""

    def __init__(self, elf: str | Path, timeout: float = 2.0, retries: int = 8,
                 compute_timeout: float | None = None, board: str = DEFAULT):
        machine = PORTS[board].machine
        why = qemu_missing()
        if why:
            raise EdgekitError(why)
        self.process = spawn(
            [QEMU, "-M", machine, "-nodefaults", "-display", "none", "-monitor", "none",
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
                             timeout=timeout, retries=retries,
                             compute_timeout=compute_timeout)
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
