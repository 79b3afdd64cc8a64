"""int8 quantization: ``quantize`` (calibrate a float Graph, produce the int8 Graph of
``docs/quantized-graph.md``) and the float <-> int8 conversion every Session does at its edge.
The fixed-point arithmetic every int8 kernel shares is ``edgekit.numerics``."""

from edgekit.quant.edge import dequantize_array, quantize_array
from edgekit.quant.quantize import quantize

__all__ = ["dequantize_array", "quantize", "quantize_array"]
