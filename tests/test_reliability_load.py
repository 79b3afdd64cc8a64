"""Untrusted files are refused with one line, before they can cost memory, time or code
execution: .ekm files (zip bombs, duplicate members and keys, values that can only give
garbage, sizes past edgekit.Limits), .pt2 files (pickles, eval'd sizes, compiled code,
corruption), --v-init nan, and fine-tuning checkpoints that do not match their model."""

from __future__ import annotations

import copy
import importlib.util
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

import edgekit
from edgekit import EdgekitError, Limits
from edgekit.cli import main
from edgekit.converters.builder import GraphBuilder

EDGEKIT = [sys.executable, "-m", "edgekit.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGEKIT, *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def refused_in_one_line(proc: subprocess.CompletedProcess, *words: str) -> str:
    """The process exited 2 with exactly one stderr line, an edgekit error naming ``words``."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, proc.stderr[-3000:])
    assert lines[0].startswith("edgekit: error: ") and "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def refused_by_main(capsys, args: list, *words: str) -> str:
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("edgekit: error: "), err
    for word in words:
        assert word in err, err
    return err


# ---- .ekm files written by hand -------------------------------------------------------------

def mlp(hidden: int = 16) -> edgekit.Graph:
    rng = np.random.default_rng(0)
    b = GraphBuilder({"source": "test"})
    x = b.input("x", (1, 8))
    y = b.node("linear", [x, b.param(rng.normal(size=(hidden, 8)), "fc1.w"),
                          b.param(rng.normal(size=hidden), "fc1.b")], {"activation": "relu"},
               name="fc1")
    b.output(b.node("linear", [y, b.param(rng.normal(size=(3, hidden)), "fc2.w"),
                               b.param(rng.normal(size=3), "fc2.b")], name="fc2"))
    return b.build()


def unpack(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    with zipfile.ZipFile(path) as zf:
        doc = json.loads(zf.read("graph.json"))
        with np.load(io.BytesIO(zf.read("params.npz"))) as npz:
            return doc, {k: npz[k] for k in npz.files}


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def pack(path: Path, doc: dict | str, arrays: dict[str, np.ndarray]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("graph.json", doc if isinstance(doc, str) else json.dumps(doc))
        zf.writestr("params.npz", npz_bytes(arrays))
    return path


@pytest.fixture(scope="module")
def float_ekm(tmp_path_factory) -> Path:
    return mlp().save(tmp_path_factory.mktemp("float") / "mlp.ekm")


@pytest.fixture(scope="module")
def int8_ekm(tmp_path_factory) -> Path:
    calib = np.random.default_rng(1).normal(size=(32, 8)).astype(np.float32)
    return edgekit.quantize(mlp(), calib).save(tmp_path_factory.mktemp("int8") / "mlp.ekm")


def corrupted(tmp_path: Path, source: Path, change) -> Path:
    doc, arrays = unpack(source)
    change(doc, arrays)
    return pack(tmp_path / "bad.ekm", doc, arrays)


def refused(path: Path, *words: str, limits: Limits | None = None) -> str:
    with pytest.raises(EdgekitError) as info:
        edgekit.load(path, **({"limits": limits} if limits else {}))
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message, message
    return message


def param_key(doc: dict, name: str) -> str:
    return f"p{doc['params'].index(name)}"


def test_nan_and_inf_params_are_refused(tmp_path, float_ekm):
    for bad in (np.nan, np.inf, -np.inf):
        def put(doc, arrays, bad=bad):
            arrays[param_key(doc, "fc1.w")][2, 3] = bad
        refused(corrupted(tmp_path, float_ekm, put), "'fc1.w'", "NaN or infinite")


def test_a_graph_output_that_is_a_param_is_refused(tmp_path, float_ekm):
    refused(corrupted(tmp_path, float_ekm, lambda d, a: d.update(outputs=["fc2.b"])),
            "output 'fc2.b' is a param")


def test_duplicate_zip_members_are_refused(tmp_path, float_ekm):
    doc, arrays = unpack(float_ekm)
    other = copy.deepcopy(doc)
    other["outputs"] = [other["nodes"][0]["outputs"][0]]  # the last graph.json would win
    path = pack(tmp_path / "dup.ekm", doc, arrays)
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(path, "a") as zf:
        zf.writestr("graph.json", json.dumps(other))
    refused(path, "'graph.json' twice")


def test_duplicate_npy_members_in_params_are_refused(tmp_path, float_ekm):
    doc, arrays = unpack(float_ekm)
    inner = io.BytesIO(npz_bytes(arrays))
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(inner, "a") as zf:
        with zf.open("p0.npy", "w") as f:
            np.lib.format.write_array(f, np.zeros_like(arrays["p0"]))
    path = tmp_path / "dup.ekm"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("graph.json", json.dumps(doc))
        zf.writestr("params.npz", inner.getvalue())
    refused(path, "params.npz", "'p0.npy' twice")


def test_duplicate_json_keys_are_refused(tmp_path, float_ekm):
    doc, arrays = unpack(float_ekm)
    text = json.dumps(doc)
    hidden = doc["nodes"][0]["outputs"][0]
    text = text.replace('"outputs": ', f'"outputs": ["{hidden}"], "outputs": ', 1)
    assert json.loads(text)["outputs"] == doc["outputs"]  # json alone keeps the last silently
    refused(pack(tmp_path / "dup.ekm", text, arrays), "key 'outputs' twice")


def test_nan_anywhere_in_graph_json_is_refused(tmp_path, float_ekm):
    doc, arrays = unpack(float_ekm)
    doc["metadata"]["calibrated_range"] = [0.0, float("nan")]
    refused(pack(tmp_path / "nan.ekm", doc, arrays), "graph.json holds a NaN")


# ---- int8 quantization parameters ------------------------------------------------------------

def activation(doc: dict) -> str:
    return doc["nodes"][0]["outputs"][0]


def test_int8_zero_points_outside_the_int8_range_are_refused(tmp_path, int8_ekm):
    for zp in (128, -129, 300):
        def put(doc, arrays, zp=zp):
            doc["tensors"][activation(doc)]["quant"]["zero_point"] = [zp]
        refused(corrupted(tmp_path, int8_ekm, put), repr(activation(unpack(int8_ekm)[0])),
                "[-128, 127]")


def test_a_nonzero_zero_point_on_weights_is_refused(tmp_path, int8_ekm):
    def put(doc, arrays):
        q = doc["tensors"]["fc1.w"]["quant"]
        q["zero_point"] = [0] * (len(q["zero_point"]) - 1) + [3]
    refused(corrupted(tmp_path, int8_ekm, put), "node 0", "weight 'fc1.w'", "zero point 3")


@pytest.mark.parametrize("scale", [1e-300, 1e-45, 1e300, True])
def test_scales_that_are_not_positive_finite_float32_are_refused(tmp_path, int8_ekm, scale):
    def put(doc, arrays):
        doc["tensors"][activation(doc)]["quant"]["scale"] = [scale]
    refused(corrupted(tmp_path, int8_ekm, put), "scales must be positive and finite in float32")


def test_an_int8_activation_without_quantization_is_refused(tmp_path, int8_ekm, capsys):
    path = corrupted(tmp_path, int8_ekm,
                     lambda d, a: d["tensors"][activation(d)].update(quant=None))
    name = activation(unpack(int8_ekm)[0])
    refused(path, f"tensor {name!r} is int8 without quantization parameters")
    refused_by_main(capsys, ["inspect", path], "without quantization parameters")
    refused_in_one_line(run_cli("inspect", path), name)


# ---- limits: bytes, elements, activations, time steps ------------------------------------------

def deflated(data: bytes) -> tuple[bytes, int, int]:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush(), zlib.crc32(data), len(data)


def deflated_zeros(mib: int) -> tuple[bytes, int, int]:
    """``mib`` MiB of zeros as raw deflate (about 1 KiB per MiB): one MiB compressed after a
    full flush, which resets the compressor, repeated."""
    chunk = bytes(1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    c.compress(chunk)
    c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(chunk) + c.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(chunk, crc)
    return block * mib + c.flush(), crc, mib << 20


def handmade_zip(members: dict[str, tuple[bytes, int, int]]) -> bytes:
    """A zip of deflated members given as (raw deflate, crc, size): zipfile cannot write
    pre-compressed data."""
    out, central = io.BytesIO(), []
    for name, (raw, crc, size) in members.items():
        offset, encoded = out.tell(), name.encode()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(raw), size,
                              len(encoded), 0) + encoded + raw)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc,
                                   len(raw), size, len(encoded), 0, 0, 0, 0, 0, offset)
                       + encoded)
    directory = b"".join(central)
    out.write(directory + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members),
                                      len(members), len(directory), out.tell(), 0))
    return out.getvalue()


def peak_while_refused(path: Path, *words: str) -> int:
    """tracemalloc's peak (numpy reports its buffers to it) over a load that must fail."""
    tracemalloc.start()
    try:
        refused(path, *words)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_1_mb_zip_bomb_is_refused_before_inflating(tmp_path, float_ekm):
    doc, _ = unpack(float_ekm)
    bomb = deflated_zeros(1024)  # 1 GiB of zeros
    assert len(bomb[0]) < 1.1e6
    path = tmp_path / "bomb.ekm"
    path.write_bytes(handmade_zip({"graph.json": deflated(json.dumps(doc).encode()),
                                   "params.npz": bomb}))
    assert peak_while_refused(path, "max_decompressed_bytes", "1,073,") < 16 << 20


def test_a_zip_bomb_inside_params_npz_is_refused_before_inflating(tmp_path, float_ekm):
    doc, _ = unpack(float_ekm)
    inner = handmade_zip({"p0.npy": deflated_zeros(1024)})
    path = tmp_path / "bomb.ekm"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("graph.json", json.dumps(doc))
        zf.writestr("params.npz", inner)
    assert peak_while_refused(path, "params.npz", "max_decompressed_bytes") < 16 << 20


def test_a_data_file_that_cannot_fit_in_free_memory_is_refused_before_inflating(
        tmp_path, float_ekm, capsys, monkeypatch):
    path = tmp_path / "bomb.npz"
    path.write_bytes(handmade_zip({"x.npy": deflated_zeros(1024)}))  # claims 1 GiB
    monkeypatch.setattr("edgekit.limits.available_memory", lambda: 256 << 20)  # a small board
    tracemalloc.start()
    try:
        refused_by_main(capsys, ["run", float_ekm, "--input", path], "1,073,741,824 bytes",
                        "268,435,456 bytes of memory free")
        assert tracemalloc.get_traced_memory()[1] < 64 << 20  # the command's own, not 1 GiB
    finally:
        tracemalloc.stop()

def relu_chain(shape: tuple[int, ...], depth: int) -> edgekit.Graph:
    b = GraphBuilder()
    y = b.input("x", shape)
    for i in range(depth):
        y = b.node("relu", [y], name=f"act{i}")
    b.output(y)
    return b.build()


def test_a_2_to_the_30_element_activation_is_refused(tmp_path, capsys):
    path = relu_chain((1, 1 << 15, 1 << 15), 1).save(tmp_path / "huge.ekm")
    refused(path, "tensor 'x' has 1,073,741,824 elements", "max_tensor_elements",
            "edgekit.Limits(max_tensor_elements=")
    refused_by_main(capsys, ["inspect", path], "max_tensor_elements")
    refused_in_one_line(run_cli("profile", path), "max_tensor_elements")


def test_activations_that_together_pass_the_limit_are_refused(tmp_path):
    path = relu_chain((1, 1 << 14, 1 << 13), 3).save(tmp_path / "wide.ekm")  # 4 x 2^27
    refused(path, "536,870,912 elements", "max_activation_elements")
    raised = edgekit.load(path, limits=Limits(max_activation_elements=1 << 29))
    assert raised.tensors["x"].shape == (1, 1 << 14, 1 << 13)


def spiking(tmp_path: Path, steps) -> Path:
    """The MLP's file with a spiking Graph's metadata, T = ``steps``."""
    doc, arrays = unpack(mlp().save(tmp_path / "mlp.ekm"))
    doc["metadata"].update(timesteps=steps, encoding="direct", snn_output="membrane")
    return pack(tmp_path / "snn.ekm", doc, arrays)


def test_spiking_timesteps_past_the_limit_or_not_positive_ints_are_refused(tmp_path, capsys):
    path = spiking(tmp_path, 10**9)
    np.save(tmp_path / "x.npy", np.zeros((1, 8), np.float32))
    refused(path, "1,000,000,000 time steps", "max_timesteps")
    refused_by_main(capsys, ["run", path, "--input", tmp_path / "x.npy"], "max_timesteps")
    assert edgekit.load(path, limits=Limits(max_timesteps=10**9)).metadata["timesteps"] == 10**9
    for steps in (0, -3, 2.5, 1e9, "8", None):
        refused(spiking(tmp_path, steps), "timesteps must be a positive int")
    assert edgekit.load(spiking(tmp_path, 8)).metadata["timesteps"] == 8


def test_limits_themselves_must_be_positive_ints():
    with pytest.raises(EdgekitError, match="max_timesteps must be a positive int"):
        Limits(max_timesteps=0)


# ---- .pt2 files ------------------------------------------------------------------------------

torch_only = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")


@pytest.fixture(scope="module")
def good_pt2(tmp_path_factory) -> Path:
    import torch

    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    path = tmp_path_factory.mktemp("pt2") / "good.pt2"
    torch.export.save(torch.export.export(net.eval(), (torch.randn(1, 4),)), str(path))
    return path


class WritesMarker:
    """Unpickling this runs code: it writes the file ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def rewritten(good: Path, out: Path, change=lambda name, data: None,
              extra: dict[str, bytes] | None = None) -> Path:
    """A copy of the archive ``good`` with ``change(name_within_root, data)`` applied to each
    member (new bytes, or None to keep them) and the members ``extra`` added."""
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(out, "w") as dst:
        root = src.namelist()[0].split("/")[0]
        for info in src.infolist():
            data = change(info.filename[len(root) + 1:], src.read(info))
            dst.writestr(info, data if data is not None else src.read(info))
        for name, data in (extra or {}).items():
            dst.writestr(f"{root}/{name}", data)
    return out


def pickled(obj) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@torch_only
def test_a_pt2_whose_sample_inputs_run_code_when_unpickled_runs_nothing(tmp_path, good_pt2,
                                                                      capsys):
    marker = tmp_path / "ran"
    evil = rewritten(good_pt2, tmp_path / "evil.pt2", lambda name, data: pickled(
        (WritesMarker(marker),)) if name.startswith("data/sample_inputs/") else None)
    refused_by_main(capsys, ["convert", evil, "-o", tmp_path / "m.ekm"], "evil.pt2",
                    "Unsupported global", "never unpickles")
    refused_in_one_line(run_cli("convert", evil, "-o", tmp_path / "m.ekm"), "evil.pt2")
    assert not marker.exists() and not (tmp_path / "m.ekm").exists()


@torch_only
def test_a_pt2_with_a_pickled_opaque_constant_runs_nothing(tmp_path, good_pt2, capsys):
    marker = tmp_path / "ran"

    def change(name, data):
        if name == "data/constants/model_constants_config.json":
            return json.dumps({"config": {"c": {"path_name": "opaque_obj_0", "is_param": False,
                                                "use_pickle": True, "tensor_meta": None}}})
    evil = rewritten(good_pt2, tmp_path / "evil.pt2", change,
                     {"data/constants/opaque_obj_0": pickle.dumps(WritesMarker(marker))})
    refused_by_main(capsys, ["convert", evil, "-o", tmp_path / "m.ekm"], "opaque_obj_0",
                    "pickled objects")
    assert not marker.exists()


@torch_only
def test_a_pt2_whose_symbolic_size_is_python_code_runs_nothing(tmp_path, good_pt2, capsys):
    marker = tmp_path / "ran"

    def change(name, data):
        if name.startswith("models/"):
            doc = json.loads(data)
            values = doc["graph_module"]["graph"]["tensor_values"]
            values[next(iter(values))]["sizes"][0] = {"as_expr": {
                "expr_str": f"__import__('os').system('touch {marker}') or 3",
                "hint": {"as_int": 3}}}
            return json.dumps(doc)
    evil = rewritten(good_pt2, tmp_path / "evil.pt2", change)
    refused_by_main(capsys, ["inspect", evil], "is not a size expression")
    assert not marker.exists()


@torch_only
def test_a_pt2_node_that_is_no_aten_operator_is_refused(tmp_path, good_pt2, capsys):
    """from_torch calls a node with constant arguments to fold it: a higher-order op would run
    the subgraphs the file defines."""
    def change(name, data):
        if name.startswith("models/"):
            doc = json.loads(data)
            doc["graph_module"]["graph"]["nodes"][0]["target"] = "torch.ops.higher_order.cond"
            return json.dumps(doc)
    refused_by_main(capsys, ["inspect", rewritten(good_pt2, tmp_path / "hop.pt2", change)],
                    "'torch.ops.higher_order.cond', not an ATen operator")


@torch_only
def test_a_pt2_carrying_compiled_code_is_refused(tmp_path, good_pt2, capsys):
    aoti = rewritten(good_pt2, tmp_path / "aoti.pt2",
                     extra={"data/aotinductor/model/model.so": b"\x7fELF not really"})
    refused_by_main(capsys, ["inspect", aoti], "data/aotinductor/model/model.so",
                    "compiled code")


@torch_only
def test_a_corrupt_pt2_is_one_line_without_torch_traceback(tmp_path, good_pt2):
    cut = tmp_path / "cut.pt2"
    cut.write_bytes(good_pt2.read_bytes()[:2000])
    refused_in_one_line(run_cli("inspect", cut), "cut.pt2")
    # zip-valid but the safe unpickler refuses: torch logs a traceback, then we raise
    bad = rewritten(good_pt2, tmp_path / "bad.pt2", lambda name, data: b"not a torch file"
                    if name.startswith("data/sample_inputs/") else None)
    refused_in_one_line(run_cli("inspect", bad), "bad.pt2")


@torch_only
def test_good_pt2_files_still_convert_static_and_dynamic_batch(tmp_path, good_pt2):
    import torch

    from edgekit.converters.pt2 import load_pt2

    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 3)).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    dynamic = tmp_path / "dynamic.pt2"
    torch.export.save(torch.export.export(net, (torch.randn(2, 2, 8, 8),),
                                          dynamic_shapes=({0: batch},)), str(dynamic))
    for path, ops in ((good_pt2, ["linear"]), (dynamic, ["conv2d", "reshape", "linear"])):
        assert [n.op for n in edgekit.from_torch(load_pt2(path)).nodes] == ops
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ  # restored after the load


# ---- --v-init and other float options -------------------------------------------------------

@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_v_init_must_be_finite(tmp_path, float_ekm, capsys, value):
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).normal(size=(16, 8)))
    out = tmp_path / "snn.ekm"
    refused_by_main(capsys, ["convert", float_ekm, "--to-snn", "--calibration-data",
                             tmp_path / "calib.npz", f"--v-init={value}", "-o", out],
                    "v_init must be a finite number")
    assert not out.exists()


# ---- fine-tuning checkpoints -----------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A model, its data and the checkpoint of one epoch of fine-tuning."""
    root = tmp_path_factory.mktemp("finetune")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    np.savez(root / "data.npz", x=x, y=(x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1))
    model = mlp().save(root / "mlp.ekm")
    args = ["finetune", model, "--data", root / "data.npz", "--rule", "bp", "--batch-size",
            "16", "--out", root / "tuned.ekm", "--checkpoint", root / "run.ckpt"]
    assert main([str(a) for a in [*args, "--epochs", "1"]]) == 0
    return root, args, (root / "run.ckpt").read_bytes()


def tampered(root: Path, good: bytes, change) -> Path:
    with np.load(io.BytesIO(good)) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    path = root / "tampered.ckpt"
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def resume(args: list, ckpt: Path, model: Path | None = None) -> list[str]:
    args = [str(a) for a in args]
    if model is not None:
        args[1] = str(model)
    return [*args[:-1], str(ckpt), "--epochs", "2", "--resume"]


def weight_key(arrays: dict) -> str:
    return next(k for k, v in arrays.items() if k.startswith("w/") and v.ndim == 2)


def test_a_checkpoint_of_another_model_is_refused(tmp_path, run, capsys):
    root, args, good = run
    other = mlp()
    other.nodes[0].attrs["activation"] = "relu6"  # same params, shapes and names
    path = tampered(root, good, lambda a: None)
    refused_by_main(capsys, resume(args, path, other.validate().save(tmp_path / "o.ekm")),
                    "a checkpoint of another model", "delete it or run without --resume")
    assert main(resume(args, path)) == 0  # its own model resumes from it


def test_a_checkpoint_named_like_a_model_is_refused(tmp_path, run, capsys):
    """A checkpoint is training state: written as ``.ekm`` it would be a model file that no
    command can load."""
    root, args, good = run
    ckpt = tmp_path / "new.ekm"
    refused_by_main(capsys, [*[str(a) for a in args[:-1]], ckpt, "--epochs", "1"],
                    "a checkpoint is training state, not a model")
    assert not ckpt.exists()


@pytest.mark.parametrize("change, words", [
    (lambda a: a.update({weight_key(a): np.ones((3, 3), np.float32)}), "this model needs"),
    (lambda a: a.update({weight_key(a): a[weight_key(a)].astype(np.int64)}), "int64"),
    (lambda a: a[weight_key(a)].__setitem__((0, 0), np.nan), "NaN or inf"),
    (lambda a: a.pop(weight_key(a)), "has no array"),
    (lambda a: a.update(extra=np.zeros(2, np.float32)), "does not have: extra"),
    (lambda a: a.update(meta=np.array(json.dumps(
        {k: v for k, v in json.loads(str(a["meta"])).items() if k != "opt_steps"}))),
     "not an edgekit checkpoint"),
])
def test_a_checkpoint_that_does_not_fit_is_refused_before_use(run, capsys, change, words):
    root, args, good = run
    refused_by_main(capsys, resume(args, tampered(root, good, change)), words)


def test_a_wrong_optimizer_state_size_is_refused_not_a_crash(run):
    root, args, good = run
    path = tampered(root, good, lambda a: a.update(
        {next(k for k in a if k.startswith("opt/m/")): np.zeros(3, np.float32)}))
    refused_in_one_line(run_cli(*resume(args, path)), "opt/m/", "this model needs float32")
