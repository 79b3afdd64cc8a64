"""``to_c_exits``: an int8 early-exit Graph as one firmware model that evaluates its exit policy
itself and stops at the exit it accepts (``edgekit.speech``'s models; ``metadata["early_exit"]``).

The schedule is ``to_c``'s, whole (every block, every exit's head). After the step that writes
an exit's int8 log-posteriors the model decides, in integers: it sums ``exits.fixed_point``'s
table over the exit's (frame, class) values (``entropy``) or over each frame's largest value
(``posterior``) and compares the sum with the threshold, or counts exits (``exit:K``); the last
exit always stops. Once an exit stops, the later steps return at once (their per-step ticks are
the board's few instructions of a call), so the instruction count of an inference is that of the
exit it stopped at. The same decision as the host's on the same int8 numbers, exactly: the table
and threshold are built from the host's own scores (``fixed_point``).

What INFER returns (no protocol change: the firmware's outputs are the model's spans): one byte,
the 1-based exit it stopped at, then that exit's (frames, classes) int8 log-posteriors (the
span's offset moves to the accepted exit's output in the arena; the byte lives past the plan).
With ``frontend`` the host sends audio instead of features: the board computes the log-mels in
float (``firmware/ek_logmel.c``, within float32 rounding of numpy's) and quantizes them itself.
"""

from __future__ import annotations

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph

from . import to_c

FUNCTION = "exit_decide"


def generate(graph: Graph, policy, frontend: bool = False) -> tuple[str, str, str]:
    """``(model.c, model.h, hash)`` of ``graph`` deciding with ``policy``
    (``edgekit.speech.exits.Policy``) after each exit; with ``frontend`` the board also
    computes the features from audio (``audio_frontend``)."""
    from edgekit.quant.edge import dequantizer
    from edgekit.speech.exits import exits_of

    exits = exits_of(graph)
    w, fp = to_c._walk(graph)
    shapes = {tuple(graph.tensors[e.output].shape[1:]) for e in exits}
    quants = {(tuple(q.scale), tuple(q.zero_point)) for q in
              (graph.tensors[e.output].quant for e in exits)}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2 or len(quants) != 1:
        raise EdgekitError("the board decides between exits of one (frames, classes) shape and "
                           "one int8 quantization; this model's exits differ")
    frames, classes = next(iter(shapes))
    values = dequantizer(graph.tensors[exits[0].output].quant)(
        np.arange(-128, 128).astype(np.int8))
    table, threshold = _fixed_point(policy, values, frames, classes)
    step_of = {node.outputs[0]: i for i, node in enumerate(graph.nodes)}
    for k, ex in enumerate(exits):
        i = step_of[ex.output]
        call = w.calls[i]
        if not call.endswith(" break;"):
            raise AssertionError(f"to_c's step {i} is not one case: {call!r}")
        w.calls[i] = f"{call[:-len(' break;')]} {FUNCTION}({k}, {w.offsets[ex.output]}); break;"
    decision = w.plan.size  # one byte past the plan: the accepted exit
    more = [f"/* early exit: policy {policy} */",
            f"static const int32_t exit_table[256] = {{{','.join(map(str, table))}}};",
            "static uint8_t exit_done;",
            f"static void {FUNCTION}(uint8_t k, uint32_t at) {{",
            f"    int stop = k + 1 >= {len(exits) if policy.kind != 'exit' else policy.value};",
            *_sum(policy.kind, frames, classes, threshold),
            f"    if (stop) {{ exit_done = 1; arena[{decision}] = (int8_t)(k + 1); "
            "outputs[1].offset = at; }",
            "}"]
    head = "    if (step == 0) exit_done = 0;\n    if (exit_done) return;"
    spans = {"outputs": [(decision, 1), (w.offsets[exits[0].output], frames * classes)]}
    arena = decision + 4
    if frontend:
        code, spans["inputs"], arena = audio_frontend(graph, w.offsets[graph.inputs[0]], arena)
        more = [*code, *more]
        head = "    if (step == 0) frontend();\n" + head
    return to_c.assemble(graph, w, fp, spans, more, head, arena)


def audio_frontend(graph: Graph, features_at: int, audio_at: int) -> tuple[list[str], list,
                                                                           int]:
    """C of ``frontend()``, which turns the audio the host sent into the model's int8 input
    (``firmware/ek_logmel.c`` in float, then quantized as the host's edge does: half away
    from zero), the input span (a u32 sample count, then 16-bit PCM up to the window's
    samples, at ``audio_at`` past the plan) and the arena's new size."""
    from edgekit.speech import frontend, logmel_c

    info = graph.tensors[graph.inputs[0]]
    if tuple(info.shape[1:]) != (frontend.MELS, frontend.FRAMES) or info.quant is None:
        raise EdgekitError(f"the board's front-end makes ({frontend.MELS}, {frontend.FRAMES}) "
                           f"int8 log-mels; the model takes {info.shape[1:]}")
    size = 4 + 2 * frontend.MAX_SAMPLES
    n = frontend.MELS * frontend.FRAMES
    code = ['#include <math.h>', '#include "ek_logmel.h"', *logmel_c.declarations(),
            f"static float features[{n}], fft_work[2 * EK_LOGMEL_FFT];",
            "static void frontend(void) {",
            f"    const uint8_t *at = (const uint8_t *)arena + {audio_at};",
            "    uint32_t n = at[0] | at[1] << 8 | (uint32_t)at[2] << 16 | (uint32_t)at[3] << 24;",
            f"    if (n > {frontend.MAX_SAMPLES}u) n = {frontend.MAX_SAMPLES}u;",
            "    ek_logmel(&logmel, (const int16_t *)(at + 4), n, features, fft_work);",
            f"    int8_t *q = arena + {features_at};",
            f"    for (uint32_t i = 0; i < {n}u; i++) {{",
            f"        float v = features[i] / {float(info.quant.scale[0])!r}f, "
            "r = floorf(fabsf(v) + 0.5f);",
            f"        int32_t k = (int32_t)(v < 0 ? -r : r) + {int(info.quant.zero_point[0])};",
            "        q[i] = (int8_t)(k < -128 ? -128 : k > 127 ? 127 : k);", "    }", "}"]
    return code, [(audio_at, size)], audio_at + size


def _fixed_point(policy, values: np.ndarray, frames: int, classes: int) -> tuple[list, int]:
    from edgekit.speech.exits import fixed_point

    table, threshold = fixed_point(policy, values, frames, classes)
    bound = int(np.abs(table).max()) * frames * classes
    if bound >= 2 ** 63 or np.abs(table).max() >= 2 ** 31:
        raise EdgekitError("the exit policy's sums would overflow the board's integers")
    return [int(v) for v in table], int(threshold)


def _sum(kind: str, frames: int, classes: int, threshold: int) -> list[str]:
    """C lines that set ``stop`` from the exit at ``arena + at`` (``exit:K`` needs none)."""
    if kind == "exit":
        return []
    if kind == "entropy":
        body = [f"        for (uint32_t i = 0; i < {frames * classes}u; i++) "
                "s += exit_table[lp[i] + 128];",
                f"        stop = s <= {threshold}LL;"]
    else:
        body = [f"        for (uint32_t f = 0; f < {frames}u; f++, lp += {classes}) {{",
                "            int8_t m = lp[0];",
                f"            for (uint32_t c = 1; c < {classes}u; c++) if (lp[c] > m) m = lp[c];",
                "            s += exit_table[m + 128];", "        }",
                f"        stop = s >= {threshold}LL;"]
    return ["    if (!stop) {", "        const int8_t *lp = arena + at;",
            "        int64_t s = 0;", *body, "    }"]
