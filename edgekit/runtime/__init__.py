"""numba reference runtime: kernels, executor, memory planner."""
