"""Writing files so that nothing is lost: every file edgekit writes goes through here.

A write goes to a temporary file of its own beside the destination (``.<name>.<pid>.<random>.tmp``),
is flushed and fsynced, and only then renamed over the destination (``os.replace``, atomic on
one filesystem), and the folder is fsynced so the rename survives a power cut. So:

- a failure part-way (disk full, ``ulimit -f``, an exception, Ctrl-C) removes the temporary
  and leaves the previous file as it was;
- a reader of the path sees the old file or the new one, never a part of either;
- writers racing for one path each rename a whole file of their own: the last rename wins and
  the file is always one writer's complete output (a fixed temporary name would let them
  write into each other's file);
- a writer killed outright (SIGKILL) leaves its temporary behind; the next write to the same
  path removes the temporaries of writers that no longer run (known by the pid in the name;
  a folder shared between machines over a network filesystem could see a live writer of
  another machine removed, which makes that writer fail loudly, never lose the old file).

``check_file`` and ``check_folder`` let a command refuse, before any work, an output it could
not write or one that would replace one of its own inputs.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from edgekit.errors import EdgekitError

_UMASK = os.umask(0)  # read once, at import, before any thread could create a file meanwhile
os.umask(_UMASK)
_NAME_KEPT = 100  # characters of the destination's name in a temporary's (names max 255)


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file object whose contents replace ``path`` atomically when the block ends.

    For writers that stream (``np.save``, ``zipfile``); if the block raises, ``path`` keeps its
    old contents and the temporary is removed. A symlink is written through, as ``open`` would.
    ``OSError`` (no folder, no permission, disk full) becomes an ``EdgekitError``.
    """
    given = Path(path)
    target = Path(os.path.realpath(given))
    _check_replaceable(given, target)
    prefix = f".{target.name[:_NAME_KEPT]}."
    _remove_orphans(target.parent, prefix)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}.", suffix=".tmp",
                                   dir=target.parent)
    except OSError as err:
        raise _cannot_write(given, err) from None
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp makes the file private (0600); give it what ``open`` would have
            with contextlib.suppress(OSError):  # (filesystems without modes refuse)
                os.fchmod(fd, target.stat().st_mode & 0o7777 if target.exists()
                          else 0o666 & ~_UMASK)
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise _cannot_write(given, err) from None
        raise
    _fsync_folder(target.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Replace ``path`` with ``data`` atomically (see ``atomic_write``); returns ``path``."""
    with atomic_write(path) as f:
        f.write(data)
    return Path(path)


def check_folder(folder: str | Path, create: bool = False) -> None:
    """Refuse a folder that cannot take new files: missing (unless ``create``, when its nearest
    existing parent must take the new folder), a file, or not writable by this user."""
    folder = probe = Path(folder)
    while create and not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.exists():
        raise EdgekitError(f"{folder}: no such folder; create it first")
    if not probe.is_dir():
        raise EdgekitError(f"{probe}: is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise EdgekitError(f"{probe}: the folder is not writable")


def check_file(path: str | Path, inputs: Iterable[str | Path | None] = (),
               create_folder: bool = False) -> None:
    """Refuse an output file that is a folder, that would replace one of ``inputs`` (the files
    the same command reads), or whose folder ``check_folder`` refuses."""
    path = Path(path)
    if path.is_dir():
        raise EdgekitError(f"{path}: is a folder; name a file to write")
    for source in inputs:
        if source is not None and _same_file(path, Path(source)):
            raise EdgekitError(f"{path}: would overwrite {source}, an input of this command; "
                               "choose another output")
    try:
        check_folder(path.parent, create=create_folder)
    except EdgekitError as err:
        raise EdgekitError(f"cannot write {path}: {err}") from None
    _check_replaceable(path, Path(os.path.realpath(path)))


def _check_replaceable(given: Path, target: Path) -> None:
    """A read-only file stays: the rename could replace it, but ``open`` would refuse."""
    if target.is_dir():
        raise EdgekitError(f"{given}: is a folder; name a file to write")
    if target.exists() and not os.access(target, os.W_OK):
        raise EdgekitError(f"{given}: the file is read-only; not replacing it")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist (yet)
        return a.resolve() == b.resolve()


def _cannot_write(path: Path, err: OSError) -> EdgekitError:
    kept = "the previous file is unchanged" if path.exists() else "nothing was written"
    return EdgekitError(f"{path}: cannot write ({err.strerror or err}); {kept}")


def _remove_orphans(folder: Path, prefix: str) -> None:
    """Remove the temporaries this path's earlier writers left when they were killed."""
    if os.name != "posix":  # os.kill(pid, 0) probes only on POSIX (elsewhere it kills)
        return
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if not entry.name.startswith(prefix):
                continue
            # exactly ``<pid>.<mkstemp's 8 characters>.tmp``: not a longer name's temporary
            mine = re.fullmatch(r"(\d+)\.[a-z0-9_]{8}\.tmp", entry.name[len(prefix):])
            if mine and not _running(int(mine[1])):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable; some systems cannot open or fsync a folder, and the new file
    is in place either way, so this is best effort."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
