"""The README's "what runs where" table, generated from the op modules' declarations.

``python -m edgekit.ops.table`` prints it; ``--write README.md`` replaces the table between the
README's markers. ``tests/test_conformance.py`` fails when the README and the declarations
drift, and runs every implemented cell against the numpy reference.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgekit.fileio import atomic_write_bytes
from edgekit.ops import OPS
from edgekit.ops.backends import BACKENDS

CELLS = tuple(BACKENDS)
LABELS = {"float32": "cpu f32", "int8": "cpu int8", "spiking": "SNN", "spiking_int8": "SNN int8",
          "torch": "from torch", "onnx_import": "from ONNX", "tflite": "TFLite", "onnx": "ONNX",
          "onnx_spiking": "ONNX SNN", "c": "MCU C", "c_spiking": "MCU SNN", "gpu": "gpu (torch)",
          "quant_spiking": "SNN quant", "learn": "learn"}
START, END = "<!-- op-table:start -->", "<!-- op-table:end -->"


def support_table() -> str:
    """Markdown: one row per op, one column per backend; ✓ where implemented, a numbered note
    where the op's module declares why not, ? where it does neither (a conformance failure)."""
    reasons: list[str] = []
    rows = ["| op | " + " | ".join(LABELS[b] for b in CELLS) + " |",
            "|---|" + "---|" * len(CELLS)]
    for name in sorted(OPS):
        spec, cells = OPS[name], []
        for backend in CELLS:
            if backend in spec.impls:
                cells.append("✓")
            elif backend in spec.reasons:
                if spec.reasons[backend] not in reasons:
                    reasons.append(spec.reasons[backend])
                cells.append(f"—{reasons.index(spec.reasons[backend]) + 1}")
            else:
                cells.append("?")
        rows.append(f"| `{name}` | " + " | ".join(cells) + " |")
    notes = [f"{i}. {why}" for i, why in enumerate(reasons, 1)]
    return "\n".join([START, *rows, "", *notes, END])


def write(path: Path) -> None:
    """Replace the table between the markers in ``path``."""
    text = path.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{path} has no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    atomic_write_bytes(path, (head + support_table() + rest.split(END, 1)[1]).encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, metavar="README", help="update this file's table")
    args = parser.parse_args()
    if args.write:
        write(args.write)
    else:
        print(support_table())


if __name__ == "__main__":
    main()
