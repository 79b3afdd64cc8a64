"""The `edgekit` command line, run as a user runs it: a real subprocess of the console script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgekit
from edgekit import data

torch = pytest.importorskip("torch")

EDGEKIT = [sys.executable, "-m", "edgekit.cli"]


def cli(*args: str, cwd: Path | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*EDGEKIT, *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=300)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A digits CNN saved as a .pt2 program, with its test split as a data file."""
    from edgekit import models

    root = tmp_path_factory.mktemp("cli")
    ds = data.digits(16)
    net = models.train(models.digits_cnn(16), ds.x_train, ds.y_train, epochs=3)
    program = torch.export.export(net, (torch.from_numpy(ds.x_test[:1]),))
    torch.export.save(program, str(root / "cnn.pt2"))
    ds.save(root / "test.npz")
    np.save(root / "x.npy", ds.x_test[:7])
    return root, net, ds


def test_version():
    assert cli("--version").stdout.strip() == f"edgekit {edgekit.__version__}"


def test_convert_inspect_run(trained):
    root, net, ds = trained
    out = root / "cnn.ekm"
    assert "wrote" in cli("convert", str(root / "cnn.pt2"), "-o", str(out)).stdout
    info = json.loads(cli("inspect", str(out), "--json").stdout)
    assert [la["op"] for la in info["layers"]] == ["conv2d", "maxpool2d", "conv2d", "maxpool2d",
                                                   "reshape", "linear"]
    assert info["totals"]["macs"] == sum(la["macs"] for la in info["layers"]) > 0
    assert info["totals"]["peak_activation_bytes"] > 0
    text = cli("inspect", str(out)).stdout
    assert "conv2d+relu" in text and "MACs" in text

    cli("run", str(out), "--input", str(root / "x.npy"), "--output", str(root / "y.npy"))
    y = np.load(root / "y.npy")
    with torch.no_grad():
        expected = net(torch.from_numpy(ds.x_test[:7])).numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    ran = json.loads(cli("run", str(out), "--input", str(root / "test.npz"), "--json").stdout)
    assert ran["shape"] == [len(ds.y_test), 10]


def test_convert_quantize_and_validate_on_every_cpu_backend(trained, tmp_path):
    root, _, _ = trained
    out = tmp_path / "int8"
    text = cli("convert", str(root / "cnn.pt2"), "--quantize", "int8", "--calibration-data",
               str(root / "test.npz"), "--to", "ekm,tflite,onnx", "-o", str(out),
               "--report").stdout
    assert "costs the most" in text
    for name in ("cnn.ekm", "cnn.float.ekm", "cnn.tflite", "cnn.onnx"):
        assert (out / name).exists()
    for target in ("cpu", "cpu:onnxruntime", "cpu:litert", "cpu:tflite-micro"):
        report = json.loads(cli("deploy", str(out / "cnn.ekm"), "--target", target, "--validate",
                                str(root / "test.npz"), "--reference",
                                str(out / "cnn.float.ekm"), "--json").stdout)
        assert abs(report["accuracy"] - report["float_accuracy"]) <= 0.01, target
        assert report["vs_edgekit_runtime"]["top1_agreement"] >= 0.99, target
        steps = report["int8_vs_edgekit_runtime"]  # raw int8 outputs, in steps
        assert steps["values"] == 10 * report["samples"], target
        assert {r["tensor"] for r in report["layers"] if "max_steps" in r}, target
        if target == "cpu:tflite-micro":  # same integer arithmetic: identical outputs
            assert report["vs_edgekit_runtime"]["max_abs_error"] == 0
            assert steps["differing"] == steps["max_steps"] == 0
    text = cli("deploy", str(out / "cnn.ekm"), "--target", "cpu:tflite-micro", "--validate",
               str(root / "test.npz")).stdout
    assert f"int8 outputs vs edgekit runtime: bit-exact ({steps['values']} values)" in text


def test_quantize_needs_calibration_data(trained, tmp_path):
    root, _, _ = trained
    proc = cli("convert", str(root / "cnn.pt2"), "--quantize", "int8", "-o", str(tmp_path),
               ok=False)
    assert proc.returncode == 2 and "--calibration-data" in proc.stderr


def test_targets_lists_cpu():
    rows = json.loads(cli("targets", "--json").stdout)
    assert {"target": "cpu", "available": True, "reason": ""} in rows


@pytest.mark.parametrize("args, message", [
    (["inspect", "missing.ekm"], "no such file"),
    (["convert", "model.h5", "-o", "x.ekm"], "no such file"),
    (["run", "bad.ekm", "--input", "x.npy"], "malformed"),
    (["run", "bad.txt", "--input", "x.npy"], "unknown model format"),
])
def test_errors_are_one_line_not_tracebacks(tmp_path, args, message):
    (tmp_path / "bad.ekm").write_bytes(b"garbage")
    (tmp_path / "bad.txt").write_text("x")
    proc = cli(*args, cwd=tmp_path, ok=False)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_wrong_input_shape_is_reported(trained, tmp_path):
    root, _, _ = trained
    cli("convert", str(root / "cnn.pt2"), "-o", str(tmp_path / "m.ekm"))
    np.save(tmp_path / "bad.npy", np.zeros((2, 1, 8, 8), np.float32))
    proc = cli("run", str(tmp_path / "m.ekm"), "--input", str(tmp_path / "bad.npy"), ok=False)
    assert proc.returncode == 2 and "shape" in proc.stderr


def test_demo_runs_end_to_end(tmp_path):
    proc = cli("demo", "--out", str(tmp_path / "demo"), "--json", cwd=tmp_path)
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert report["edgekit_accuracy"] == report["torch_accuracy"] > 0.9
    assert report["top1_agreement"] == 1.0
    int8 = {row["target"]: row for row in report["int8"]}
    assert int8["cpu"]["accuracy"] >= report["edgekit_accuracy"] - 0.01
    assert int8["cpu:tflite-micro"]["max_abs_vs_edgekit"] == 0
    snn = {(row["weights"], row["target"]): row for row in report["spiking"]["runs"]}
    assert snn[("float32", "cpu")]["accuracy"] >= report["spiking"]["ann_accuracy"] - 0.01
    assert snn[("int8", "cpu:onnxruntime")]["max_abs_vs_edgekit"] == 0
    for name in ("digits_cnn.pt2", "digits_cnn.ekm", "digits_test.npz", "report.json",
                 "digits_snn.ekm", "digits_snn.int8.ekm"):
        assert (tmp_path / "demo" / name).exists()
