"""Models from other frameworks: import an ONNX file and compare it with the torch import."""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import edgekit
from edgekit import data, models


def main(out_dir: Path) -> None:
    ds = data.digits(size=16)
    net = models.train(models.mlp(in_features=256), ds.x_train, ds.y_train, epochs=5)
    example = torch.from_numpy(ds.x_test[:1])
    torch.onnx.export(net, (example,), str(out_dir / "mlp.onnx"), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "batch"}})

    from_onnx = edgekit.deploy(edgekit.from_onnx(out_dir / "mlp.onnx")).run(ds.x_test)
    from_torch = edgekit.deploy(edgekit.from_torch(net, (example,))).run(ds.x_test)
    print(f"ONNX import vs torch import: max |diff| {np.abs(from_onnx - from_torch).max():.2e}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()))
