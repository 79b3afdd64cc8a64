"""Terminal output shared by the CLI and the demo: aligned tables and a progress bar."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Plain-text table; numbers right-aligned, floats to 4 significant digits."""
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    numeric = [all(_is_num(r[i]) for r in cells) and bool(cells) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, cells)])


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _is_num(s: str) -> bool:
    return s.replace(",", "").replace(".", "").replace("-", "").replace("e", "").isdigit()


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """Yield ``items`` while drawing a bar with the rate and the time left on stderr when it is
    a terminal; quiet otherwise (a log or a caller reading stderr sees only results and
    errors)."""
    items = list(items) if total is None else items
    total = len(items) if total is None else total  # type: ignore[arg-type]
    tty = sys.stderr.isatty()
    start = time.perf_counter()
    for done, item in enumerate(items, 1):
        yield item
        if tty:
            bar = "#" * (24 * done // max(total, 1))
            spent = time.perf_counter() - start
            eta = spent / done * (total - done)
            sys.stderr.write(f"\r{desc} [{bar:<24}] {done}/{total} {spent:5.1f}s "
                             f"{done / max(spent, 1e-9):.3g}/s ETA {eta:.0f}s ")
            sys.stderr.flush()
    if tty:
        sys.stderr.write("\n")
