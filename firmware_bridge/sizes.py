"""The firmware's own flash and RAM per board, measured from built ELFs, so the fit check of a
microcontroller profile counts what the image really holds, not a guess.

A model's image is the firmware (startup, UART, the protocol server, the libc it needs), the
kernels its schedule calls (``--gc-sections`` drops the others), the generated model (constant
arrays, one parameter struct and one ``run_step`` case per step, the spans) and, in RAM, the
model's arena, column and link buffers beside the firmware's own state and stack.

``measure(board)`` compiles the firmware as ``build.build`` does, with an empty model, links it
as it is and once per kernel (kept as a model's call keeps it), and reads the ELF sections
(``.text``, ``.rodata``, ``.ARM.exidx`` and ``.data`` in flash; ``.data``, ``.bss`` and
``.stack`` in RAM): the base image, what each kernel adds (its code, its helpers and libc
calls, its data) and ``sizeof`` each parameter struct. ``python -m
edgekit.firmware_bridge.sizes --write`` stores the measurement in ``firmware_sizes.json`` for
every core, so the fit check runs where no toolchain is installed; where one is and the
firmware changed since (``--check`` says whether the table is current), the fit measures the
firmware as it is, once per change (about 15 s a core, cached beside the firmware builds).

``Board.flash_bytes``/``ram_bytes`` add up a model from the table, bounded from above: kernels
that share a helper each count it, each constant array is padded to 4 B, and a ``run_step``
case is bounded per call and argument (``CASE_BYTES``, ``CALL_BYTES``, ``ARG_BYTES``: Thumb-2
needs a table entry and a branch per case, a ``bl`` per call, and at most a literal load and
its 4 B literal per argument). RAM adds at most ``RAM_ALIGN_SLACK`` of alignment to the
model's buffers. ``tests/test_profile.py`` holds the bounds against the built images of the
MLPerf Tiny models.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from edgekit.errors import EdgekitError

TABLE = Path(__file__).parent / "firmware_sizes.json"
CASE_BYTES = 8  # a case's jump-table entry (tbh, 2 B) and its branch out (4 B), aligned
CALL_BYTES = 4  # bl
ARG_BYTES = 8  # a literal load and its 4 B literal, at most
RAM_ALIGN_SLACK = 32  # the arena's 16 B alignment, 4 B for column and link buffers, the stack's 8
EMPTY_PAYLOAD = 64  # the empty model's frame payload (HELLO's), one step, a 4 B arena
FLASH_SECTIONS = (".text", ".rodata", ".ARM.exidx", ".data")  # .data: its initialisers


def kernel_names() -> list[str]:
    """The firmware's public functions: every ``ek_*`` prototype in its headers."""
    from edgekit.firmware_bridge.build import FIRMWARE

    text = "\n".join(p.read_text() for p in sorted(FIRMWARE.glob("*.h")))
    protos = re.findall(r"^(?!\s*(?:static|#|typedef))[\w \*]*?\b(ek_\w+)\s*\(", text, re.M)
    return sorted(set(protos))


def struct_names() -> list[str]:
    """The firmware's parameter struct types (``typedef struct {...} ek_*_t;``)."""
    from edgekit.firmware_bridge.build import FIRMWARE

    text = "\n".join(p.read_text() for p in sorted(FIRMWARE.glob("*.h")))
    return sorted(set(re.findall(r"\}\s*(ek_\w+_t)\s*;", text)))


def _empty_model(body: list[str]) -> tuple[str, str, str]:
    """``(model.c, model.h, hash)`` of a model with no step, whose ``run_step`` stores the
    addresses in ``body`` in ``ek_data_sink`` (so the linker keeps what they name)."""
    from edgekit.firmware_bridge.build import FIRMWARE

    source = "\n".join([
        '#include "model.h"', '#include "ek_kernels.h"',  # first: it orders the family headers
        *(f'#include "{p.name}"' for p in sorted(FIRMWARE.glob("*.h"))),
        "static int8_t arena[4] __attribute__((aligned(16)));",
        "static const ek_span_t span[1] = {{0, 4}};",
        "const volatile void *volatile ek_data_sink;",
        "static void run_step(uint16_t step) {", "    if (step != 0xFFFFu) return;", *body, "}",
        "const ek_model_t ek_model = {", '    .hash = "0000000000000000", .arena_bytes = 4,',
        "    .n_inputs = 1, .n_outputs = 1, .n_steps = 1,",
        "    .inputs = span, .outputs = span, .steps = span,",
        "    .arena = arena, .run_step = run_step,", "};", ""])
    header = ("#ifndef MODEL_H\n#define MODEL_H\n#include \"ek_model.h\"\n"
              "#define EK_MODEL_HASH \"0000000000000000\"\n#define EK_ARENA_BYTES 4\n"
              f"#define EK_N_STEPS 1\n#define EK_MAX_PAYLOAD {EMPTY_PAYLOAD}\n#endif\n")
    return source, header, "0" * 16


def _tool(name: str) -> str:
    from edgekit.firmware_bridge.build import CC

    return CC.replace("gcc", name)


def elf_sections(elf: str | Path) -> dict[str, int]:
    """Flash (``.text`` with rodata, ``.ARM.exidx``, ``.data``'s initialisers) and RAM
    (``.data``, ``.bss``, ``.stack``) of an ELF, and its stack."""
    out = subprocess.run([_tool("size"), "-A", str(elf)], capture_output=True, text=True,
                         check=True).stdout
    sections = {p[0]: int(p[1]) for p in (line.split() for line in out.splitlines())
                if len(p) == 3 and p[1].isdigit()}
    return {"flash_bytes": sum(sections.get(s, 0) for s in FLASH_SECTIONS),
            "ram_bytes": sum(sections.get(s, 0) for s in (".data", ".bss", ".stack")),
            "stack_bytes": sections.get(".stack", 0)}


class _Linker:
    """The firmware of one core compiled once into objects (``build``'s flags, sources and
    linker script), linked again per measurement: each kernel is kept by naming it a root of
    ``--gc-sections`` (``--require-defined``), as a model's call keeps it."""

    def __init__(self, board: str, work: Path):
        from edgekit.firmware_bridge.build import (
            CC,
            CFLAGS,
            COMMON_CFLAGS,
            FIRMWARE,
            _sources,
            board_dir,
            port,
        )

        self.work, self.cc = work, CC
        self.flags = [*port(board).cflags, *COMMON_CFLAGS, *CFLAGS]
        self.linker = board_dir(board) / "link.ld"
        self.includes = [f"-I{FIRMWARE}", f"-I{work}"]
        source, header, _ = _empty_model([])
        (work / "model.h").write_text(header)
        self.objects = [self.compile(path) for path in _sources(board)]
        self.empty = self.compile_text("empty", source)
        nm = subprocess.run([_tool("nm"), "-g", "--defined-only", *map(str, self.objects)],
                            capture_output=True, text=True, check=True).stdout
        self.defined = set(re.findall(r" T (\w+)$", nm, re.M))  # the functions the objects hold

    def _run(self, cmd: list[str]) -> None:
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise EdgekitError(f"firmware size measurement failed:\n{result.stderr[-4000:]}")

    def compile(self, path: Path) -> Path:
        obj = self.work / f"{path.parent.name}_{path.stem}.o"
        self._run([self.cc, *self.flags, *self.includes, "-c", str(path), "-o", str(obj)])
        return obj

    def compile_text(self, name: str, source: str) -> Path:
        path = self.work / f"{name}.c"
        path.write_text(source)
        return self.compile(path)

    def link(self, model: Path, roots: list[str] = ()) -> Path:
        from edgekit.firmware_bridge.build import LDFLAGS

        elf = self.work / "firmware.elf"
        self._run([self.cc, *self.flags, *LDFLAGS, "-T", str(self.linker), *map(str, self.objects),
                   str(model), *(f"-Wl,--require-defined={r}" for r in roots), "-lm",
                   "-o", str(elf)])
        return elf


def measure(board: str) -> dict[str, object]:
    """Compile the firmware for ``board`` once, link it empty and once per kernel kept, and
    return its table entry: ``base_flash``, ``base_ram`` (less the empty model's arena and
    link buffers), each kernel's ``[flash, ram]`` beyond the base and each struct's size."""
    import tempfile

    from edgekit.converters.to_c import link_bytes

    with tempfile.TemporaryDirectory() as tmp:
        linker = _Linker(board, Path(tmp))
        base = elf_sections(linker.link(linker.empty))
        kernels = {}
        for name in (n for n in kernel_names() if n in linker.defined):  # not static inline
            elf = elf_sections(linker.link(linker.empty, [name]))
            kernels[name] = [elf[k] - base[k] for k in ("flash_bytes", "ram_bytes")]
        structs = struct_names()
        source = _empty_model([f"    static const {t} ek_sizeof_{t}; ek_data_sink = "
                               f"&ek_sizeof_{t};" for t in structs])[0]
        elf = linker.link(linker.compile_text("structs", source))
        out = subprocess.run([_tool("nm"), "-S", str(elf)], capture_output=True, text=True,
                             check=True).stdout
    sizes = {m[1]: int(m[0], 16) for m in re.findall(
        r"^\w+ (\w+) \w ek_sizeof_(\w+?)(?:\.\d+)?$", out, re.M)}
    return {"base_flash": base["flash_bytes"],
            "base_ram": base["ram_bytes"] - 4 - link_bytes(EMPTY_PAYLOAD, 1),
            "stack": base["stack_bytes"], "kernels": kernels,
            "structs": {t: sizes[t] for t in structs}, "sources": _sources_digest(board)}


def _sources_digest(board: str) -> str:
    """The content hash of what a measurement on ``board`` depends on: the firmware's sources,
    its board files and the flags."""
    import hashlib

    from edgekit.firmware_bridge.build import CFLAGS, COMMON_CFLAGS, FIRMWARE, LDFLAGS, port

    digest = hashlib.sha256(" ".join([board, *port(board).cflags, *COMMON_CFLAGS, *CFLAGS,
                                      *LDFLAGS]).encode())
    for path in sorted(FIRMWARE.rglob("*")):
        if path.is_file() and path.suffix in (".c", ".h", ".ld", ".s"):
            digest.update(str(path.relative_to(FIRMWARE)).encode() + path.read_bytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Board:
    """One board's measured table (``firmware_sizes.json``)."""

    name: str
    base_flash: int
    base_ram: int
    stack: int
    kernels: dict[str, list[int]]
    structs: dict[str, int]

    def kernel(self, name: str) -> list[int]:
        """``[flash, ram]`` kernel ``name`` adds; the largest measured for one the table has not
        measured yet (a kernel newer than the table)."""
        if name in self.kernels:
            return self.kernels[name]
        return [max(v[0] for v in self.kernels.values()), max(v[1] for v in self.kernels.values())]

    def struct(self, ctype: str) -> int:
        return self.structs.get(ctype, max(self.structs.values()))

    def flash_bytes(self, calls: str, structs: list[str], arrays: list[int],
                    n_spans: int) -> int:
        """Flash of the image for a model whose ``run_step`` body is ``calls`` (its C), with a
        parameter struct of each type in ``structs``, constant arrays of ``arrays`` bytes and
        ``n_spans`` input/output/step spans."""
        names = set(re.findall(r"\b(ek_\w+)\s*\(", calls))
        return (self.base_flash + sum(self.kernel(n)[0] for n in names)
                + run_step_bytes(calls) + sum(self.struct(t) for t in structs)
                + sum(-(-n // 4) * 4 for n in arrays) + 8 * n_spans)

    def ram_bytes(self, calls: str, model_bytes: int) -> int:
        """RAM of the image: the firmware's own state and stack, what the kernels in ``calls``
        keep, and the model's ``model_bytes`` (arena, column, link buffers) with their
        alignment."""
        names = set(re.findall(r"\b(ek_\w+)\s*\(", calls))
        return (self.base_ram + sum(self.kernel(n)[1] for n in names) + model_bytes
                + RAM_ALIGN_SLACK)


def run_step_bytes(calls: str) -> int:
    """An upper bound of ``run_step``'s code for this body: per case, per call, per argument."""
    cases = len(re.findall(r"\bcase \d+:", calls)) or 1
    args = 0
    for m in re.finditer(r"\bek_\w+\s*\(", calls):
        depth, i, commas = 1, m.end(), 0
        while depth and i < len(calls):
            depth += {"(": 1, ")": -1}.get(calls[i], 0)
            commas += calls[i] == "," and depth == 1
            i += 1
        args += commas + 1
    n_calls = len(re.findall(r"\bek_\w+\s*\(", calls))
    return CASE_BYTES * cases + CALL_BYTES * n_calls + ARG_BYTES * args


@cache
def _table() -> dict[str, dict]:
    try:
        return json.loads(TABLE.read_text())
    except (OSError, ValueError) as err:
        raise EdgekitError(f"{TABLE}: cannot read the firmware's measured sizes ({err}); "
                           "run python -m edgekit.firmware_bridge.sizes --write") from None


def board_sizes(board: str) -> Board:
    """The measured sizes of ``board``: the stored table's, or, where the firmware changed
    since it was measured and the toolchain is here, a measurement of the firmware as it is
    (cached by its content hash beside the firmware builds)."""
    from edgekit.firmware_bridge.build import toolchain_missing

    entry = _table().get(board)
    digest = _sources_digest(board)
    if (entry is None or entry.get("sources") != digest) and toolchain_missing() is None:
        entry = _remeasured(board, digest)
    if entry is None:
        raise EdgekitError(f"no measured firmware sizes for core {board!r} (measured: "
                           f"{', '.join(sorted(_table()))}): run python -m "
                           f"edgekit.firmware_bridge.sizes --write --board {board}")
    return Board(board, entry["base_flash"], entry["base_ram"], entry["stack"],
                 entry["kernels"], entry["structs"])


@cache
def _remeasured(board: str, digest: str) -> dict[str, object]:
    from edgekit.fileio import atomic_write_bytes
    from edgekit.firmware_bridge.build import cache_dir

    path = cache_dir() / f"sizes-{board}-{digest}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        entry = measure(board)
        atomic_write_bytes(path, json.dumps(entry).encode())
        return entry


def main(argv: list[str] | None = None) -> int:
    from edgekit.firmware_bridge.ports import PORTS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", nargs="+", choices=list(PORTS), default=list(PORTS))
    parser.add_argument("--write", action="store_true", help=f"store the measurement in {TABLE}")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 where the table was measured on other firmware sources")
    args = parser.parse_args(argv)
    table = json.loads(TABLE.read_text()) if TABLE.exists() else {}
    if args.check:
        stale = [b for b in args.board if table.get(b, {}).get("sources") != _sources_digest(b)]
        print("stale: " + ", ".join(stale) if stale else "current")
        return 1 if stale else 0
    for board in args.board:
        table[board] = measure(board)
        print(board, json.dumps({k: v for k, v in table[board].items()
                                 if k not in ("kernels", "structs")}))
    if args.write:
        TABLE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
