"""The device-side float32 runtime: numba kernels, a memory planner and the executor that binds
them (``Executor(graph).run(x)``), plus the plain-numpy reference they are tested against."""

from edgekit.runtime.executor import Executor, Program, execute
from edgekit.runtime.planner import Buffer, GreedyPlanner, NaivePlanner, Plan, Planner
from edgekit.runtime.registry import register
from edgekit.runtime.spiking import SpikingExecutor, executor_for

__all__ = ["Buffer", "Executor", "GreedyPlanner", "NaivePlanner", "Plan", "Planner", "Program",
           "SpikingExecutor", "execute", "executor_for", "register"]
