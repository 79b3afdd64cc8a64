"""Named limits on what edgekit accepts from a file, and the zip reader that keeps to them.

A model file is untrusted input: a few hundred bytes can declare a tensor of 2^40 elements, a
spiking Graph of 10^9 time steps, or a zip member that inflates to gigabytes. Each such file is
refused when it is read, naming the limit it broke, instead of exhausting memory or running for
hours later. The defaults are far above any model meant for an edge device; a trusted file that
needs more is read with raised limits::

    edgekit.load("big.ekm", limits=edgekit.Limits(max_tensor_elements=1 << 30))
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, fields

from edgekit.errors import EdgekitError

_CHUNK = 1 << 20  # bytes inflated per read


@dataclass(frozen=True)
class Limits:
    """What a model file may ask for (per zip, per tensor, per Graph)."""

    max_decompressed_bytes: int = 512 << 20
    """Bytes inflated from one zip: the ``.ekm`` (or ``.pt2``), and the ``params.npz`` inside
    the ``.ekm`` on its own. Checked against the sizes the zip claims and while inflating."""
    max_tensor_elements: int = 1 << 28
    """Elements of any one tensor, param or activation (batch 1)."""
    max_activation_elements: int = 1 << 28
    """Elements of all activation tensors of a Graph together at batch 1: a bound on the
    arena any runtime allocates per sample."""
    max_timesteps: int = 10_000
    """Time steps T of a spiking Graph (each inference runs the Graph T times)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if type(value) is not int or value < 1:
                raise EdgekitError(f"Limits.{f.name} must be a positive int, got {value!r}")

    def exceeded(self, what: str, name: str) -> EdgekitError:
        """The error for ``what`` (a phrase with the amount) going past limit ``name``."""
        return EdgekitError(
            f"{what}, above the limit {name} = {getattr(self, name):,}; if the file is "
            f"trusted, read it with limits=edgekit.Limits({name}=...), as in "
            f"edgekit.load(path, limits=...)")


DEFAULT_LIMITS = Limits()


def zip_members(zf: zipfile.ZipFile, limits: Limits, where: str) -> dict[str, zipfile.ZipInfo]:
    """The members of ``zf`` by name, once their names are unique (a zip reader would silently
    take the last of two) and the sizes they claim fit ``limits.max_decompressed_bytes``
    together: checked before anything is inflated."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        if info.filename in members:
            raise EdgekitError(f"{where} holds the member {info.filename!r} twice")
        members[info.filename] = info
    claimed = sum(info.file_size for info in members.values())
    if claimed > limits.max_decompressed_bytes:
        raise limits.exceeded(f"{where}'s members claim {claimed:,} bytes inflated",
                              "max_decompressed_bytes")
    return members


def inflate(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> bytearray:
    """One member (of ``zip_members``), inflated a chunk at a time into a buffer of its claimed
    size: the zip reader never yields more than the claim, and checks the CRC on reaching it."""
    out = bytearray(info.file_size)
    view, got = memoryview(out), 0
    with zf.open(info) as member:
        while got < info.file_size and (n := member.readinto(view[got:got + _CHUNK])):
            got += n
    if got != info.file_size:
        raise EdgekitError(f"{where}: member {info.filename!r} is {got:,} bytes, its header "
                           f"claims {info.file_size:,}")
    return out


def available_memory() -> int | None:
    """Bytes this machine can still give (``MemAvailable``), or None where it does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_npz(path, where: str | None = None) -> None:
    """Refuse an ``.npz`` whose arrays, by the sizes its zip claims, cannot fit in the memory
    this machine has free, before numpy inflates them: data and checkpoints have no fixed
    size limit (a user's data may be large), but one that cannot be held is only a crash or a
    swap storm later. A file that is not a zip is left to its reader."""
    where = where or str(path)
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as zf:
            claimed = sum(info.file_size for info in zf.infolist())
    except (OSError, zipfile.BadZipFile):
        return  # the reader says what is wrong with it
    free = available_memory()
    if free is not None and claimed > free:
        raise EdgekitError(f"{where}: its arrays claim {claimed:,} bytes inflated, more than "
                           f"the {free:,} bytes of memory free on this machine")
