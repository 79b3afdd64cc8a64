"""A fleet of separate processes on Flower's deployment engine: a SuperLink (``serve``), one
SuperNode per device (``join``), and a federation started against them (``run``).

Each command starts Flower's own programs (``flower-superlink``, ``flower-supernode``,
``flwr run``) with Flower's home in a folder of its own (removed at the end unless one is
given), in new process groups, and stops every one of them when it ends, on Ctrl-C and on
SIGTERM: SIGTERM to each group, SIGKILL to what is still there after a grace period.
Without TLS files the connection is ``--insecure`` (loopback and trusted networks only).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.fleet import runs

GRACE_S = 10.0  # Flower's programs stop cleanly in 2-4 s on SIGTERM

APP_TOML = """[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "edgekit-fleet"
version = "1.0.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "edgekit"

[tool.flwr.app.components]
serverapp = "edgekit.fleet.server:app"
clientapp = "edgekit.fleet.client:app"

[tool.flwr.app.config]
run-dir = ""
"""


class _Terminated(Exception):
    """SIGTERM, turned into an exception so the processes started are stopped on the way out."""


class Processes(list):
    """Started processes; ``interrupted`` after Ctrl-C or SIGTERM."""

    interrupted = False


@contextmanager
def processes() -> Iterator[Processes]:
    """Started processes go in the list; all are stopped at the end, newest first. Ctrl-C and
    SIGTERM end the block (``interrupted``) instead of the program."""
    started = Processes()

    def terminated(signum: int, frame: Any) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield started
    except (KeyboardInterrupt, _Terminated):
        started.interrupted = True
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop(started)


def stop(started: Processes) -> None:
    for proc in reversed(started):
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    for proc in reversed(started):
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _signal_group(proc, signal.SIGKILL)  # what it started (a ClientApp) goes too
        proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def start(started: Processes, argv: list[str], env: dict[str, str],
          quiet: bool = False) -> subprocess.Popen:
    exe = Path(sys.executable).with_name(argv[0])
    if not exe.exists():
        runs.require_flower()
        raise EdgekitError(f"{exe}: not found; reinstall flwr (pip install 'edgekit[fleet]')")
    out = subprocess.DEVNULL if quiet else None
    # Flower starts its helpers (flower-superexec, flwr-clientapp) by name: from this Python
    path = os.pathsep.join([str(exe.parent), os.environ.get("PATH", "")])
    proc = subprocess.Popen([str(exe), *argv[1:]], env={**os.environ, **env, "PATH": path},
                            start_new_session=True, stdout=out, stderr=out)
    started.append(proc)
    return proc


@contextmanager
def home(folder: str | None) -> Iterator[Path]:
    """Flower's home: ``folder`` (kept), or a temporary one removed at the end."""
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        yield Path(folder)
        return
    path = Path(tempfile.mkdtemp(prefix="edgekit-flwr-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def tls_args(cert: str | None, key: str | None, ca: str | None, server: bool) -> list[str]:
    """Flower's TLS flags, or ``--insecure`` when no certificate is given."""
    if not (cert or key or ca):
        return ["--insecure"]
    for name, value in (("certificate", cert if server else ca), ("key", key if server else ca)):
        if not value or not Path(value).exists():
            raise EdgekitError(f"TLS needs the {name} file{'' if value is None else f' {value}'}"
                               f" (or neither, for an insecure link)")
    if server:
        return ["--ssl-certfile", cert, "--ssl-keyfile", key] + (["--ssl-ca-certfile", ca]
                                                                  if ca else [])
    return ["--root-certificates", ca]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def address(server: str) -> tuple[str, int]:
    host, _, port = server.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise EdgekitError(f"--server must be HOST:PORT, got {server!r}")
    return host, int(port)


def wait_for(server: str, seconds: float = 30.0) -> None:
    """Until the SuperLink at ``server`` accepts connections (one started just before is
    listening after a few seconds)."""
    host, port = address(server)
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection((host, port), timeout=2).close()
            return
        except OSError as err:
            if time.monotonic() > deadline:
                raise EdgekitError(f"no SuperLink answers at {server} ({err.strerror or err}); "
                                   "start one with `edgekit fleet serve`") from None
            time.sleep(0.5)


def serve(port: int, host: str = "0.0.0.0", folder: str | None = None,
          tls: tuple[str | None, str | None, str | None] = (None, None, None)) -> int:
    """Run a SuperLink until it stops, Ctrl-C or SIGTERM; its exit code."""
    if not 0 < port < 65536:
        raise EdgekitError(f"--port must be 1..65535, got {port}")
    argv = ["flower-superlink", *tls_args(*tls, server=True), "--host", host,
            "--port", str(port)]
    with home(folder) as h, processes() as started:
        code = start(started, argv, runs.flower_env(h)).wait()
    return 130 if started.interrupted else code


def join(server: str, data: str, profile: str = "host", node_id: int | None = None,
         folder: str | None = None, ca: str | None = None) -> int:
    """Run a SuperNode for this device's shard until it stops, Ctrl-C or SIGTERM."""
    address(server)
    from edgekit.profile.devices import load_profile

    load_profile(profile)
    path = Path(data).resolve()
    if not path.is_file():
        raise EdgekitError(f"{data}: no such file")
    ident = node_id if node_id is not None else os.getpid()
    config = f"data='{path}' profile='{profile}' id={ident} partition-id={ident}"
    argv = ["flower-supernode", *tls_args(None, None, ca, server=False), "--superlink", server,
            "--port", str(free_port()), "--node-config", config]
    with home(folder) as h, processes() as started:
        code = start(started, argv, runs.flower_env(h)).wait()
    return 130 if started.interrupted else code


def run(server: str, run_dir: Path, ca: str | None = None, quiet: bool = False) -> None:
    """Start the federation of ``run_dir`` (``runs.prepare``) on the SuperLink at ``server``
    and wait for it to end (``flwr run --stream``)."""
    wait_for(server)
    app = run_dir / "app"
    app.mkdir(exist_ok=True)
    (app / "pyproject.toml").write_text(APP_TOML)
    h = run_dir / "flwr-home"
    h.mkdir(exist_ok=True)
    link = f'address = "{server}"\n' + ('insecure = true\n' if ca is None
                                        else f'root-certificates = "{ca}"\n')
    (h / "config.toml").write_text(f"[superlink.fleet]\n{link}")
    argv = ["flwr", "run", str(app), "fleet", "--stream", "--run-config",
            f'run-dir="{run_dir}"']
    with processes() as started:
        code = start(started, argv, runs.flower_env(run_dir), quiet=quiet).wait()
    if started.interrupted:
        raise EdgekitError("interrupted; the processes it started are stopped")
    if code != 0:
        raise EdgekitError(f"flwr run exited with {code} (is a SuperLink serving at {server}?)")
