"""numba kernels, one module per op family."""
