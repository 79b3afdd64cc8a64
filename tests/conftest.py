"""Shared by every test module: hypothesis settings, the digits data, and the check that no
emulated board outlives its module.

Under CI (``CI`` set), hypothesis draws the same examples on every run, so a submission's
result does not depend on which random examples it drew; locally it keeps exploring."""

import os
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def digits():
    """The bundled digits at 16x16, the data most tests train and check on."""
    from edgekit import data

    return data.digits(16)


@pytest.fixture(scope="module", autouse=True)
def no_qemu_left_behind():
    """Set up first, so torn down last: once a module's tests are done, none of the QEMU boards
    they started (children of this process) may still run; an exited one awaiting its reap is
    fine."""
    yield
    running = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" (", 1)
        except OSError:  # the process ended while we looked
            continue
        comm, fields = rest.rsplit(") ", 1)
        state, ppid = fields.split()[:2]
        if comm == "qemu-system-arm" and int(ppid) == os.getpid() and state != "Z":
            running.append(int(pid))
    assert not running, f"QEMU {running} still running after the module's tests"
