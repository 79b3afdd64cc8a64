"""What the executor needs of an op's runtime implementation: the prepare/step contract.

An op registers its prepare function in its module in ``edgekit.ops`` under the backend named by
the dtype it runs on ("float32", "int8"); ``kernel(op, dtype)`` reads it back.

A prepare function runs once per node and batch size. It gets the node's input arrays (params,
or views into the arena), its output view, and the node's attributes as keyword arguments; it
does the per-node work once (views in the shapes a kernel wants, weight layouts, constants) and
returns the step: a callable without arguments that only calls kernels. An op that needs scratch
memory registers a function giving its size in bytes from the runtime shapes; the planner places
that scratch in the arena for the node's step alone and the prepare function gets it as
``scratch`` (a uint8 array). int8 kernels register under the same op names with dtype "int8";
their prepare functions also get ``quant``, the QuantParams of each input then of the output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from edgekit.ops import OPS, implementation

Step = Callable[[], None]


@dataclass(frozen=True)
class Kernel:
    prepare: Callable[..., Step]
    scratch_nbytes: Callable[..., int] | None = None
    dtype: str = "float32"


def kernel(op: str, dtype: str) -> Kernel | None:
    """The runtime kernel of ``op`` on ``dtype`` inputs, or None."""
    impl = implementation(op, dtype)
    return None if impl is None else Kernel(impl.fn, impl.options.get("scratch"), dtype)


def register(op: str, dtype: str = "float32", *, scratch: Callable[..., int] | None = None):
    """Decorator: ``prepare`` implements ``op`` on ``dtype`` inputs."""
    return OPS[op].implements(dtype, scratch=scratch)


def bind(kernel: Callable, *args) -> Step:
    """``partial(kernel, *args)``, calling a numba kernel's compiled code for these arguments'
    types directly. Through the dispatcher every call would type each argument again to pick
    the overload: about 0.3 µs of a 13-argument call, on kernels that run for 1-5 µs at batch 1.
    The arguments are bound for good, so their types cannot change."""
    from numba.core.dispatcher import Dispatcher

    if not args and hasattr(kernel, "calls"):  # a step bound already
        return kernel
    if not isinstance(kernel, Dispatcher):
        step = partial(kernel, *args)
        step.calls = ((kernel, *args),)
        return step
    from numba import typeof

    signature = tuple(typeof(a) for a in args)
    kernel.compile(signature)
    step = partial(kernel.overloads[signature].entry_point, *args)
    step.calls = ((kernel, *args),)  # what ``runtime.fused`` writes into one function
    return step


def sequence(calls: list[tuple]) -> Step:
    """A step making kernel calls ``(kernel, *args)`` whose arguments (views included) were all
    bound in prepare: at batch 1 slicing and reshaping per call would cost more than a small
    kernel. One call is returned as it is bound."""
    bound = [bind(*call) for call in calls]
    if len(bound) == 1:
        return bound[0]

    def step() -> None:
        for call in bound:
            call()

    if all(hasattr(call, "calls") for call in bound):
        step.calls = tuple(c for call in bound for c in call.calls)
    return step
