"""The bottom layer of edgekit's numbers: TFLite's fixed-point arithmetic (``arith``) and the
per-op integer parameters built from quantization parameters (``params``), which the runtime's
int8 kernels, the C writer and the ONNX writer all read, so a multiplier is computed once.
Nothing here imports the rest of edgekit beyond ``edgekit.errors``."""
