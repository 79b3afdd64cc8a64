"""Quickstart: a PyTorch model to an edgekit Graph, saved, reloaded and run on the cpu target."""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import edgekit
from edgekit import data, metrics, models


def main(out_dir: Path) -> None:
    ds = data.digits(size=16)
    net = models.train(models.digits_cnn(size=16), ds.x_train, ds.y_train, epochs=5)

    graph = edgekit.from_torch(net, (torch.from_numpy(ds.x_test[:1]),))
    graph.save(out_dir / "digits_cnn.ekm")

    with edgekit.deploy(out_dir / "digits_cnn.ekm", target="cpu") as session:
        logits = session.run(ds.x_test)
    torch_logits = models.predict(net, ds.x_test)
    print(f"edgekit accuracy {metrics.accuracy(logits, ds.y_test):.2%}, "
          f"torch {metrics.accuracy(torch_logits, ds.y_test):.2%}, "
          f"max |diff| {np.abs(logits - torch_logits).max():.2e}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()))
