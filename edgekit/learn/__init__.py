"""On-device learning: local rules (LLS, LLS-M, LLS-MxM, forward-forward, DFA) and a backprop
baseline that update a float Graph's weights on numpy and numba alone (no torch).

``edgekit.finetune(graph, x, y, rule="lls")`` returns the updated Graph and a history; the
Graph re-quantizes (``edgekit.quantize``) and deploys like any other.
"""

from edgekit.learn.rules import RULES
from edgekit.learn.trainer import finetune, memory_for

__all__ = ["RULES", "finetune", "memory_for"]
