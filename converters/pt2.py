"""Reading a ``.pt2`` file (``torch.export.save``) that a user hands us, without running
anything it contains.

``torch.export.load`` (torch 2.13) trusts its file. Read from its source (torch/export/
__init__.py, export/pt2_archive/_package.py, _export/serde/serialize.py), a file can make it
run code in four ways:

- the sample inputs (``data/sample_inputs/``) are unpickled with ``torch.load``, retried with
  ``weights_only=False`` when the safe unpickler refuses them; weights and constants stored
  with ``use_pickle`` are loaded with ``weights_only=False`` outright;
- constants named ``opaque_obj_*`` go to ``pickle.loads``, ``custom_obj_*`` to TorchScript's
  unpickler;
- an AOTInductor package (``data/aotinductor/``) is a shared library that it loads;
- a symbolic size is an expression string that ``sympy.sympify`` evaluates with ``eval``.

So the archive is vetted first with the standard zip reader, within ``Limits``: one root
folder; only the members ``torch.export.save`` writes for an exported program (no AOTInductor
or ExecuTorch payloads, no pickled objects); every symbolic size an expression of a small
grammar (sympy constructors, symbol names, integers, + - * /); every node an ATen operator or a
symbolic-size builtin. Then ``torch.export.load`` runs with every ``torch.load`` forced to the
safe unpickler (``TORCH_FORCE_WEIGHTS_ONLY_LOAD``, which overrides an explicit
``weights_only=False``; set for the call, so not thread-safe against a concurrent
``torch.load`` that needs pickle), and with torch's log records and warnings held back: a bad
file is one line, not torch's traceback followed by ours.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.limits import DEFAULT_LIMITS, Limits, inflate, zip_members

_MEMBERS = re.compile(
    r"archive_format|archive_version|byteorder|\.data/[\w.]+|models/[\w.-]+\.json"
    r"|data/weights/[\w.-]+|data/constants/(?!custom_obj_|opaque_obj_)[\w.-]+"
    r"|data/sample_inputs/[\w.-]+\.pt|extra/[^/]+")
_SIZE_NAMES = {"Symbol", "Integer", "Rational", "Add", "Mul", "Mod", "FloorDiv", "CleanDiv",
               "CeilToInt", "FloorToInt", "TruncToInt", "PythonMod", "Max", "Min", "True",
               "False", "positive", "negative", "nonnegative", "nonpositive", "integer", "real",
               "finite", "zero", "nonzero"}
_SIZE_TOKEN = re.compile(r"\s*(?:(?P<name>[A-Za-z_]\w*)|'[a-z]+\d+'|\d+|//|[-+*/(),=])")
_SYMBOL = re.compile(r"[a-z]+\d+")
_TARGET = re.compile(
    r"torch\.ops\.aten\.\w+\.\w+|torch\.sym_\w+|math\.(?:ceil|floor|trunc)"
    r"|_operator\.(?:getitem|add|sub|mul|truediv|floordiv|mod|neg|pos|abs|eq|ne|lt|le|gt|ge"
    r"|and_|or_|not_)")


def load_pt2(path: str | Path, limits: Limits = DEFAULT_LIMITS) -> Any:
    """The ``torch.export.ExportedProgram`` saved in ``path``, loaded without unpickling
    arbitrary objects, loading libraries or evaluating code from the file; ``EdgekitError``
    for anything else."""
    path = Path(path)
    try:
        import torch
    except ImportError:
        raise EdgekitError("reading .pt2 needs torch: pip install 'edgekit[torch]'") from None
    try:
        _vet(path, limits)
    except EdgekitError as err:
        raise EdgekitError(f"{path}: {err}") from None
    except Exception as err:  # the zip and json readers raise many types on corrupt bytes
        raise EdgekitError(f"{path}: not a torch.export archive ({_gist(err)})") from None
    records: list[logging.LogRecord] = []
    try:
        with _weights_only(), _held_back(records):
            return torch.export.load(str(path))
    except Exception as err:
        # torch logs the first failure, then raises a generic one from a fallback reader
        first = next((r.exc_info[1] for r in records if r.exc_info), err)
        raise EdgekitError(f"{path}: torch.export could not load it safely ({_gist(first)}); "
                           "edgekit never unpickles objects from a file") from None


def _vet(path: Path, limits: Limits) -> None:
    """Refuse an archive that could make ``torch.export.load`` run code (see the module)."""
    with zipfile.ZipFile(path) as zf:
        members = zip_members(zf, limits, "the archive")
        roots = {name.split("/", 1)[0] for name in members}
        if len(roots) != 1 or not all("/" in name for name in members):
            raise EdgekitError("not a torch.export archive (its members must share one folder)")
        root = roots.pop()
        for name in members:
            if not _MEMBERS.fullmatch(name[len(root) + 1:]):
                raise EdgekitError(f"holds {name!r}, which is not part of an exported program "
                                   "(edgekit reads ATen programs saved by torch.export.save, "
                                   "without compiled code or pickled objects)")
        models = [n for n in members if n.startswith(f"{root}/models/")]
        if f"{root}/archive_version" not in members or not models:
            raise EdgekitError("not a torch.export archive (no archive_version or models/)")
        for name in models:
            _vet_program(json.loads(inflate(zf, members[name], "the archive")), name)


def _vet_program(doc: Any, where: str) -> None:
    """Every symbolic size of the serialized program parses as a size expression, and every
    node calls an ATen operator or a symbolic-size builtin."""
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            expr = item.get("expr_str")
            if expr is not None and not _is_size_expr(expr):
                raise EdgekitError(f"{where}: the symbolic size {str(expr)[:80]!r} is not a "
                                   "size expression (torch would evaluate it as Python)")
            nodes = item.get("nodes")
            for node in nodes if isinstance(nodes, list) else ():
                target = node.get("target") if isinstance(node, dict) else None
                if not (isinstance(target, str) and _TARGET.fullmatch(target)):
                    raise EdgekitError(f"{where}: a node calls {str(target)[:80]!r}, not an "
                                       "ATen operator")
            stack.extend(item.values())


def _is_size_expr(expr: Any) -> bool:
    """A sympy expression over symbols and integers, as torch.export writes sizes: names only
    from a fixed set or symbols (s0, u1), no attribute access, subscripts or powers."""
    if not isinstance(expr, str) or "**" in expr:
        return False
    at = 0
    while at < len(expr.rstrip()):
        token = _SIZE_TOKEN.match(expr, at)
        if not token:
            return False
        name = token.group("name")
        if name is not None and name not in _SIZE_NAMES and not _SYMBOL.fullmatch(name):
            return False
        at = token.end()
    return True


@contextmanager
def _weights_only() -> Iterator[None]:
    """Every ``torch.load`` in the block uses the safe unpickler, whatever its caller asks."""
    saved = {k: os.environ.pop(k, None) for k in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD",
                                                  "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value


class _Keep(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]):
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def _held_back(records: list[logging.LogRecord]) -> Iterator[None]:
    """torch's log records collected in ``records`` instead of printed (torch gives many of its
    loggers their own stderr handler), and its warnings ignored, for the block."""
    keep = _Keep(records)
    loggers = [logging.getLogger("torch")] + [
        logger for name, logger in list(logging.Logger.manager.loggerDict.items())
        if name.startswith("torch.") and isinstance(logger, logging.Logger)]
    saved = [(logger, logger.handlers, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.handlers, logger.propagate = [keep], False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate


def _gist(err: BaseException) -> str:
    """One line of an exception: the unpickler's reason when it refused (its first sentence,
    not its advice to allow the global), else the first line."""
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(err)).splitlines()
             if ln.strip()] or [type(err).__name__]
    refusal = next((ln for ln in lines if ln.startswith("WeightsUnpickler error")), None)
    line = refusal.split(". ")[0] if refusal else lines[0]
    return line if len(line) <= 300 else line[:300] + "..."
