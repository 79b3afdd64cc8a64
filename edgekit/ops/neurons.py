"""Spiking neurons: if_neuron and lif_neuron (the Graph's ``metadata["timesteps"]`` says how
many steps a spiking Graph runs)."""

from __future__ import annotations

from edgekit.ops import declare
from edgekit.ops.schema import OpDef, fail

NEURON_RESETS = ("subtract", "zero")


def _shape(s, a):
    """A spiking neuron keeps one membrane per element of its input; its threshold and optional
    initial membrane are params of the per-sample shape (per neuron; a per-channel threshold is
    stored expanded)."""
    if a["reset"] not in NEURON_RESETS:
        fail(f"reset must be one of {NEURON_RESETS}, got {a['reset']!r}")
    if not 0.0 < a.get("leak", 1.0) <= 1.0:
        fail(f"leak must be in (0, 1], got {a['leak']}")
    for p in s[1:]:
        if tuple(p) != tuple(s[0][1:]):
            fail(f"neuron params must have the per-sample shape {s[0][1:]}, got {p}")
    return tuple(s[0])


_DOC = ("charge V = {leak}V + x, fire s = V >= threshold, reset (subtract the threshold or to "
        "zero); output s * threshold; inputs x, threshold[, initial membrane]")

if_neuron = declare(OpDef("if_neuron", (2, 3), {"reset": "subtract"}, _shape,
                          weight_inputs=(1, 2), neuron=True, doc=_DOC.format(leak="")))
lif_neuron = declare(OpDef("lif_neuron", (2, 3), {"reset": "subtract", "leak": 0.9}, _shape,
                           weight_inputs=(1, 2), neuron=True, doc=_DOC.format(leak="leak * ")))
