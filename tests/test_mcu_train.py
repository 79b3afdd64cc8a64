"""Training on the microcontroller (``edgekit.learn.board``, ``firmware/ek_train.c``): the C
training kernels, compiled for the host, train a head as the host learner does (same data,
order and hyper-parameters) within float tolerance; the emulated Cortex-M4 does the same over
the serial link; a firmware without training commands and a head whose training buffers do
not fit the device are refused in one line."""

from __future__ import annotations

import ctypes
import dataclasses
import shutil
import subprocess

import numpy as np
import pytest

from edgekit import data
from edgekit.converters import to_c_train
from edgekit.converters.builder import GraphBuilder
from edgekit.errors import EdgekitError
from edgekit.firmware_bridge.build import FIRMWARE
from edgekit.learn import board
from edgekit.learn.trainer import finetune

TOLERANCE = 1e-5  # max |w_board - w_host| after training: float32 roundings, not a drift


def _mlp(seed: int) -> object:
    """A float MLP 64 -> 32 relu -> 16 leaky relu -> 10, random weights."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    h = b.input("x", (1, 64))
    for i, (n_in, n_out, act) in enumerate([(64, 32, "relu"), (32, 16, "none"), (16, 10, "none")]):
        w = b.param((rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32),
                    f"w{i}")
        bias = b.param(np.zeros(n_out, np.float32), f"b{i}")
        h = b.node("linear", [h, w, bias], {"activation": act})
        if i == 1:
            h = b.node("leaky_relu", [h], {"alpha": 0.1})
    b.output(h)
    return b.build()


@pytest.fixture(scope="module")
def digits():
    ds = data.digits(8)
    return ds.x_train.reshape(len(ds.x_train), -1), ds.y_train


@pytest.fixture(scope="module")
def pretrained(digits):
    """The MLP trained on digits by the host learner, so the head fine-tunes a real backbone."""
    x, y = digits
    graph, _ = finetune(_mlp(0), x[:600], y[:600], rule="bp", epochs=3, seed=0)
    return graph


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    """ek_train.c compiled for the host, as the firmware's flags compile it (no FMA)."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no host C compiler for the training kernels' twin")
    lib = tmp_path_factory.mktemp("twin") / "ek_train.so"
    subprocess.run([cc, "-std=c99", "-O2", "-shared", "-fPIC", "-ffp-contract=off",
                    str(FIRMWARE / "ek_train.c"), "-lm", "-o", str(lib)], check=True)
    return ctypes.CDLL(str(lib))


P = ctypes.POINTER(ctypes.c_float)


class Dense(ctypes.Structure):
    _fields_ = [("n_in", ctypes.c_uint16), ("n_out", ctypes.c_uint16), ("act", ctypes.c_uint8),
                ("alpha", ctypes.c_float),
                *[(k, P) for k in ("w", "b", "gw", "gb", "mw", "vw", "mb", "vb", "y")]]


class Head(ctypes.Structure):
    _fields_ = [("n_layers", ctypes.c_uint16), ("layers", ctypes.POINTER(Dense)), ("x", P),
                ("dy", P), ("dz", P), ("scale", ctypes.c_float),
                ("zero_point", ctypes.c_int32), ("adam", ctypes.c_uint8)]


class Optim(ctypes.Structure):
    _fields_ = [(k, ctypes.c_float) for k in ("weight_decay", "beta1", "beta2", "eps",
                                              "one_minus_beta1", "one_minus_beta2")] + [
        ("adam", ctypes.c_uint8), ("c1", ctypes.c_float), ("c2_squared", ctypes.c_float)]


class TwinHead:
    """The board's head in the host process: ``board.train`` drives it as it drives a
    ``BoardHead``, each sample being the backbone's int8 output row (the board makes it from
    the input; here the edgekit runtime, bit-identical to the firmware, has made it)."""

    def __init__(self, lib, s: board.Split, adam: bool):
        self.lib, self.keep = lib, []
        layers = s.layers()
        dense = (Dense * len(layers))()
        for d, layer in zip(dense, layers, strict=True):
            out, inp = layer.shape
            arrays = {"w": layer.weight.copy(), "b": layer.bias.copy(), "y": out,
                      "gw": out * inp, "gb": out}
            if adam:
                arrays.update(mw=out * inp, vw=out * inp, mb=out, vb=out)
            d.n_in, d.n_out, d.act, d.alpha = inp, out, layer.act, layer.alpha
            for k, v in arrays.items():
                setattr(d, k, self._buffer(v))
        width = max(max(layer.shape) for layer in layers)
        quant = s.backbone.tensors[s.feature].quant
        self.head = Head(len(layers), dense, self._buffer(layers[0].shape[1]),
                         self._buffer(width), self._buffer(width), float(quant.scale[0]),
                         int(quant.zero_point[0]), adam)
        self.dense, self.adam, self.classes = dense, adam, layers[-1].shape[0]
        h, u16 = ctypes.POINTER(Head), ctypes.c_uint16
        lib.ek_head_features.argtypes = [h, ctypes.c_void_p]
        lib.ek_head_zero_grads.argtypes = lib.ek_head_backward.argtypes = [h]
        lib.ek_head_forward.argtypes, lib.ek_head_forward.restype = [h], P
        lib.ek_softmax_xent.argtypes = [P, u16, u16, u16, P]
        lib.ek_softmax_xent.restype = ctypes.c_float
        lib.ek_head_update.argtypes = [h, ctypes.POINTER(Optim), ctypes.c_float]

    def _buffer(self, value) -> P:
        a = np.zeros(value, np.float32) if isinstance(value, int) else np.ascontiguousarray(
            value, np.float32).reshape(-1)
        self.keep.append(a)
        return a.ctypes.data_as(P)

    def configure(self, weight_decay: float = 0.0) -> None:
        self.opt = Optim(weight_decay, 0.9, 0.999, 1e-8, 1 - 0.9, 1 - 0.999, self.adam, 0, 0)

    def step(self, q, label, count, lr, first, last):
        h = ctypes.byref(self.head)
        self.lib.ek_head_features(h, np.ascontiguousarray(q, np.int8).ctypes.data)
        if first:
            self.lib.ek_head_zero_grads(h)
        logits = np.ctypeslib.as_array(self.lib.ek_head_forward(h), (self.classes,)).copy()
        loss = self.lib.ek_softmax_xent(logits.ctypes.data_as(P), self.classes, label, count,
                                        self.head.dy)
        self.lib.ek_head_backward(h)
        if last:
            self.lib.ek_head_update(h, ctypes.byref(self.opt), lr)
        return 0, 0, loss, int(logits.argmax())

    def instructions(self, ticks: float) -> float:
        return ticks

    def weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(np.ctypeslib.as_array(d.w, (d.n_out * d.n_in,)).reshape(d.n_out, d.n_in),
                 np.ctypeslib.as_array(d.b, (d.n_out,))) for d in self.dense]


def _max_difference(s: board.Split, tuned, reference) -> float:
    """Max |board - host| over the head's weights and biases."""
    return max(max(float(np.abs(w - reference.params[blk.weight_name]).max()),
                   float(np.abs(b - reference.params[blk.bias_name]).max()))
               for blk, (w, b) in zip(s.head, tuned, strict=True))


HYPER = {"epochs": 2, "lr": 0.01, "batch_size": 16, "seed": 0, "weight_decay": 0.0,
         "schedule": "cosine"}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_c_kernels_train_the_head_as_the_host_learner(twin, pretrained, digits, optimizer):
    """Two linear layers (leaky relu between) over the int8 backbone, 2 epochs of 200 shifted
    digits in mini-batches of 16 (the last one short): the C kernels end within float
    tolerance of edgekit.learn's backprop, having moved the weights far more than that."""
    x, y = digits
    x = np.roll(x.reshape(-1, 8, 8), 1, axis=2).reshape(len(x), -1)[:200]
    s = board.split(pretrained, x, layers=2)
    assert s.feature == s.head_graph.inputs[0] and len(s.head) == 2
    head = TwinHead(twin, s, adam=optimizer == "adam")
    history = board.train(head, board.backbone_outputs(s, x), y[:200], **HYPER)
    reference, host = board.host_reference(s, x, y[:200], optimizer=optimizer, **HYPER)
    assert _max_difference(s, head.weights(), reference) < TOLERANCE
    moved = max(float(np.abs(w - blk.weight).max()) for blk, (w, _) in
                zip(s.head, head.weights(), strict=True))
    assert moved > 1000 * TOLERANCE
    for mine, theirs in zip(history, host["epochs"], strict=True):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
        assert mine["accuracy"] == theirs["accuracy"]


def test_fit_check_counts_the_training_buffers(pretrained, digits):
    """The head's fp32 weights, gradients, AdamW's moments and activations are counted; a
    device whose SRAM holds the inference image but not them is refused before any build."""
    from edgekit.profile.devices import load_profile

    x, _ = digits
    s = board.split(pretrained, x[:100], layers=2)
    adam = to_c_train.footprint(s.backbone, s.layers(), adam=True, board="m4")
    sgd = to_c_train.footprint(s.backbone, s.layers(), adam=False, board="m4")
    params = 4 * (32 * 16 + 16 + 16 * 10 + 10)
    assert (adam.weight_bytes, adam.gradient_bytes, adam.optimizer_bytes) == (
        params, params, 2 * params)
    assert sgd.optimizer_bytes == 0 and adam.sram_bytes - sgd.sram_bytes == 2 * params
    assert adam.activation_bytes == 4 * (32 + 16 + 10 + 2 * 32)
    tight = dataclasses.replace(load_profile("cortex-m4-qemu"),
                                sram_bytes=adam.backbone.sram_bytes + params)
    limits = board.training_limits(adam, tight)
    assert [lim.fits for lim in limits] == [True, False]
    with pytest.raises(EdgekitError, match="training buffers") as err:
        board.BoardHead(s, "mcu:qemu:m4", "adam", profile=tight)
    assert "\n" not in str(err.value)


def test_refuses_what_the_board_cannot_train(pretrained, digits):
    x, _ = digits
    with pytest.raises(EdgekitError, match="frozen int8 backbone"):
        board.split(pretrained, x[:50], layers="all")
    from edgekit.quant import quantize

    with pytest.raises(EdgekitError, match="float model"):
        board.split(quantize(pretrained, x[:50]), x[:50])


# -- on the emulated board ---------------------------------------------------------------------

def _board_missing() -> str | None:
    from edgekit.firmware_bridge.board import qemu_missing
    from edgekit.firmware_bridge.build import toolchain_missing

    return toolchain_missing() or qemu_missing()


@pytest.mark.slow
@pytest.mark.skipif(bool(_board_missing()), reason=f"MCU target unavailable: {_board_missing()}")
def test_board_fine_tunes_the_head_as_the_host_learner(tmp_path, capsys, pretrained, digits):
    """``edgekit finetune --target mcu:qemu:m4``: the head trains on the emulated Cortex-M4
    over the serial link and the tuned Graph's head equals the host learner's within float
    tolerance; the image's measured sizes stay within the fit check's count."""
    import json

    import edgekit
    from edgekit.cli import main

    x, y = digits
    x = np.roll(x.reshape(-1, 8, 8), 1, axis=2).reshape(len(x), -1)[:96]
    hyper = {**HYPER, "batch_size": 32}
    model, npz, out = tmp_path / "m.ekm", tmp_path / "d.npz", tmp_path / "tuned.ekm"
    pretrained.save(model)
    np.savez(npz, x=x, y=y[:96])
    capsys.readouterr()
    assert main(["finetune", str(model), "--data", str(npz), "--target", "mcu:qemu:m4",
                 "--rule", "bp", "--layers", "2", "--epochs", "2", "--lr", "0.01",
                 "--batch-size", "32", "--out", str(out), "--json"]) == 0
    history = json.loads(capsys.readouterr().out)
    tuned = edgekit.load(out)
    s = board.split(pretrained, x, layers=2)
    reference, host = board.host_reference(s, x, y[:96], optimizer="adam", **hyper)
    on_board = [(tuned.params[b.weight_name], tuned.params[b.bias_name]) for b in s.head]
    assert _max_difference(s, on_board, reference) < TOLERANCE
    assert [r["accuracy"] for r in history["epochs"]] == [r["accuracy"] for r in host["epochs"]]
    assert all(r["head_instructions"] > 0 for r in history["epochs"])
    for name in ("w0", "b0"):  # the backbone is frozen: its float weights come back as they were
        np.testing.assert_array_equal(tuned.params[name], pretrained.params[name])
    image, counted = history["image"], history["memory"]
    assert image["ram_bytes"] <= counted["sram"] < image["ram_bytes"] + 1024
    assert image["flash_bytes"] <= counted["flash"] < image["flash_bytes"] + 4096


@pytest.mark.slow
@pytest.mark.skipif(bool(_board_missing()), reason=f"MCU target unavailable: {_board_missing()}")
def test_firmware_without_training_commands_is_one_clear_error(pretrained, digits):
    """An inference-only image answers TRAIN_CONFIG with error 3 (unknown command): one
    EdgekitError line saying what to build."""
    import edgekit

    x, _ = digits
    s = board.split(pretrained, x[:50])
    with edgekit.deploy(s.backbone, "mcu:qemu:m4") as session:
        with pytest.raises(EdgekitError, match="no training commands") as err:
            board.request(session.board.link, board.Cmd.TRAIN_CONFIG, bytes(28))
    assert "\n" not in str(err.value)


def test_cli_finetune_on_the_board_refuses_local_rules(tmp_path, pretrained, digits):
    from edgekit.cli import main

    x, y = digits
    model, npz = tmp_path / "m.ekm", tmp_path / "d.npz"
    pretrained.save(model)
    np.savez(npz, x=x[:20], y=y[:20])
    assert main(["finetune", str(model), "--data", str(npz), "--target", "mcu:qemu",
                 "--rule", "lls", "--out", str(tmp_path / "o.ekm")]) == 2
    assert not (tmp_path / "o.ekm").exists()



@pytest.mark.slow
@pytest.mark.skipif(bool(_board_missing()), reason=f"MCU target unavailable: {_board_missing()}")
def test_a_repeated_step_is_answered_not_applied_again(pretrained, digits):
    """The link resends a request whose reply was lost: the board answers a TRAIN_STEP it has
    done from the reply it kept, leaving the weights as one step left them; a step out of
    order (after a reboot the board has done none) is refused in one line."""
    import struct

    from edgekit.firmware_bridge import stream

    x, y = digits
    s = board.split(pretrained, x[:100])
    with board.BoardHead(s, "mcu:qemu:m4", "sgd") as head:
        head.configure()
        xq = board.quantized_inputs(s, x[:2])
        payload = stream._inputs(head.link, struct.pack("<IBxHH2xf", 1, 3, int(y[0]), 1, 0.5),
                                 xq[0].tobytes())
        first = head.link.request(board.Cmd.TRAIN_STEP, payload)
        head.steps = 1  # what the board has done: read_params checks it
        once = head.read_params()
        assert head.link.request(board.Cmd.TRAIN_STEP, payload) == first
        assert head.read_params() == once != b"".join(
            np.asarray(a, "<f4").tobytes() for lay in s.layers() for a in (lay.weight, lay.bias))
        head.steps = 5
        with pytest.raises(EdgekitError, match="lost its training state"):
            head.step(xq[1], int(y[1]), 1, 0.5, True, True)
