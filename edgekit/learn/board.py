"""Training on the microcontroller: the head of a deployed model learns on the board itself.

The float model is split where its trainable head begins (``layers``: ``"head"``, the
classifier, or the last N linear layers). The part before it, the backbone, is quantized to
int8 and stays frozen: it runs as the firmware's int8 model (``converters.to_c``). The head
keeps fp32 weights in the board's RAM (they are their own masters) and trains there with
backprop, softmax cross-entropy and SGD or AdamW (``converters.to_c_train``,
``firmware/ek_train.c``): the firmware gets the update kernels, the host sends one sample
at a time over the serial link (``TRAIN_STEP``, ``firmware_bridge.protocol``) and reads the
weights back at the end. MIT's tiny-training (Lin et al., "On-Device Training Under 256KB
Memory") is the anchor: backprop on a Cortex-M7 within its SRAM, with a frozen quantized
backbone.

The host learner (``edgekit.learn.finetune`` with ``bp``) trains the same head on the same
features in the same order with the same hyper-parameters (``host_reference``): the features
are the int8 backbone's outputs, dequantized as the board does, and every epoch visits the
samples in the trainer's order (``trainer.epoch_order``) at the trainer's rate
(``trainer.epoch_rate``); the board accumulates a mini-batch's gradients sample by sample and
updates on its last one, as the host sums the batch. The two end within float tolerance of
each other, not bit for bit: the host's products run vectorized in another order and its
softmax and updates in float64 (``tests/test_mcu_train.py`` measures the gap).

Before anything is built, the image is counted (``to_c_train.footprint``): the backbone's
firmware plus the training buffers (weights, gradients, AdamW's moments, activations, errors)
against the device profile's flash and SRAM; a head whose training does not fit is refused.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.firmware_bridge.protocol import Cmd
from edgekit.graph import Graph

OPTIMIZERS = ("sgd", "adam")
CALIBRATION_SAMPLES = 500  # of the training inputs, to quantize the backbone
HEAD_INSTRUCTIONS_PER_WEIGHT = 200  # soft-float forward, backward and update, at most
FIRST, LAST = 1, 2  # TRAIN_STEP's flags


@dataclass
class Split:
    """A float model cut where its trainable head begins."""

    blocks: list  # ``from_graph(graph)``, the head's blocks marked trainable
    head: list  # the head's blocks (linear layers)
    feature: str  # the head's input tensor
    backbone: Graph  # the int8 Graph up to ``feature``
    head_graph: Graph  # the float Graph from ``feature`` to the logits (the host learner's)

    def layers(self) -> list:
        """The head as ``to_c_train.Layer`` s, with the blocks' current weights."""
        from edgekit.converters.to_c_train import Layer

        return [Layer(b.weight, b.bias, b.act, b.alpha) for b in self.head]


def split(graph: Graph, calibration: np.ndarray, layers: str | int = "head") -> Split:
    """Cut float ``graph`` before its last ``layers`` and quantize the backbone on
    ``calibration`` (float inputs)."""
    from edgekit.learn.blocks import Block, from_graph
    from edgekit.learn.trainer import mark_trainable
    from edgekit.memory import cut
    from edgekit.quant import quantize

    if graph.metadata.get("quantized"):
        raise EdgekitError("training on the board starts from the float model: it quantizes "
                           "the frozen backbone itself and keeps the head in float")
    blocks = from_graph(graph)
    mark_trainable(blocks, layers)
    head = [b for b in blocks if b.trainable]
    if len(head) == len(blocks):
        raise EdgekitError(f"on the board the head trains over a frozen int8 backbone: train "
                           f"fewer than all {len(blocks)} layers (--layers head, or N)")
    for b in head:
        if not isinstance(b, Block) or b.op != "linear" or b.pool or b.pointwise or b.act > 3:
            raise EdgekitError(f"the board trains linear layers (with none, relu, relu6 or "
                               f"leaky relu); {b.name!r} is not one: train fewer layers")
    first = next(i for i, n in enumerate(graph.nodes)
                 if n.op == "linear" and n.inputs[1] == head[0].weight_name)
    feature = graph.nodes[first].inputs[0]
    backbone = cut(quantize(graph, calibration), feature)
    return Split(blocks, head, feature, backbone, _tail(graph, first))


def _tail(graph: Graph, first: int) -> Graph:
    """The float Graph of ``graph``'s nodes from ``first`` on, read from their input."""
    nodes = graph.nodes[first:]
    used = {t for n in nodes for t in (*n.inputs, *n.outputs)}
    return Graph([nodes[0].inputs[0]], list(graph.outputs),
                 {k: v for k, v in graph.tensors.items() if k in used}, list(nodes),
                 {k: v for k, v in graph.params.items() if k in used},
                 dict(graph.metadata)).validate()


def quantized_inputs(s: Split, x: np.ndarray) -> np.ndarray:
    """The backbone's int8 inputs for float samples ``x``."""
    from edgekit.quant.edge import quantize_array

    return quantize_array(np.asarray(x, np.float32), s.backbone.tensors[s.backbone.inputs[0]].quant)


def backbone_outputs(s: Split, x: np.ndarray) -> np.ndarray:
    """The int8 backbone's outputs for float samples ``x``, one row each: the edgekit
    runtime's, bit-identical to the firmware's."""
    from edgekit.targets import deploy

    with deploy(s.backbone, "cpu") as session:
        return np.asarray(session.run(quantized_inputs(s, x), raw=True)).reshape(len(x), -1)


def features(s: Split, x: np.ndarray) -> np.ndarray:
    """The head's float inputs as the board makes them from ``backbone_outputs``:
    ``(q - zero_point) * scale`` in float32, the scale rounded to float32 (``ek_head_features``)."""
    q = backbone_outputs(s, x)
    quant = s.backbone.tensors[s.feature].quant
    return (q.astype(np.float32) - np.float32(quant.zero_point[0])) * np.float32(quant.scale[0])


def host_reference(s: Split, x: np.ndarray, y: np.ndarray, **hyper: Any
                   ) -> tuple[Graph, dict[str, Any]]:
    """The host learner on what the board trains: ``edgekit.learn.finetune`` with backprop on
    the head's float Graph, fed the board's features. ``hyper``: epochs, lr, batch_size, seed,
    optimizer, weight_decay, schedule, online."""
    from edgekit.learn.trainer import finetune

    return finetune(s.head_graph, features(s, x), y, rule="bp", layers="all", **hyper)


def training_limits(fp: Any, profile: Any) -> list:
    """The device's flash and SRAM against the training image (``to_c_train.footprint``)."""
    from edgekit.profile.devices import load_profile
    from edgekit.profile.fit import Limit

    prof = load_profile(profile)
    b = fp.backbone
    return [
        Limit("flash", fp.flash_bytes, prof.flash_bytes,
              f"the backbone's image ({b.flash_bytes:,} B) + the head's first fp32 weights "
              f"({fp.weight_bytes:,} B) + the training code ({fp.code_bytes:,} B)", "firmware"),
        Limit("sram", fp.sram_bytes, prof.sram_bytes,
              f"the backbone's image ({b.sram_bytes:,} B) + training buffers "
              f"({fp.training_bytes:,} B: fp32 weights {fp.weight_bytes:,}, gradients "
              f"{fp.gradient_bytes:,}, AdamW moments {fp.optimizer_bytes:,}, activations and "
              f"errors {fp.activation_bytes:,}, state {fp.state_bytes:,})", "firmware"),
    ]


def request(link: Any, cmd: int, payload: bytes) -> bytes:
    """``link.request``; a firmware without the training commands (error 3, unknown command)
    is one ``EdgekitError`` saying what to build."""
    from edgekit.firmware_bridge.link import BoardError

    try:
        return link.request(cmd, payload)
    except BoardError as err:
        if "unknown command" in str(err):
            raise EdgekitError(f"the board's firmware has no training commands ({Cmd(cmd).name}"
                               " unknown): it was built without a trainable head; build and "
                               "flash the training image (edgekit finetune --target "
                               "mcu:...)") from None
        if "not the next training step" in str(err):
            raise EdgekitError("the board lost its training state (it rebooted, or another "
                               "host trains it): train again") from None
        raise


class BoardHead:
    """A board running ``s``'s training firmware (built for ``optimizer``): ``configure``,
    ``step`` per sample, ``predict``, ``weights``. ``target``: ``mcu:qemu[:core]`` or
    ``mcu:<port>`` (a real board flashed with ``self.firmware.elf``)."""

    def __init__(self, s: Split, target: str = "mcu:qemu", optimizer: str = "adam",
                 profile: Any = None, timeout: float | None = None, retries: int = 8):
        from edgekit.converters import to_c_train
        from edgekit.firmware_bridge.build import build
        from edgekit.targets.mcu import McuTarget

        if optimizer not in OPTIMIZERS:
            raise EdgekitError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if not target.startswith("mcu:"):
            raise EdgekitError(f"training on a board needs an mcu target, got {target!r}")
        self.split, self.optimizer = s, optimizer
        self.mcu = McuTarget(target[4:])
        layers = s.layers()
        adam = optimizer == "adam"
        self.footprint = to_c_train.footprint(s.backbone, layers, adam, self.mcu.core)
        self.limits = training_limits(self.footprint, profile or self.mcu.profile)
        over = [lim for lim in self.limits if not lim.fits]
        if over:
            raise EdgekitError("training the head does not fit the board: "
                               + "; ".join(lim.message() for lim in over)
                               + ". Train fewer layers, use SGD, or a larger device.")
        self.firmware = build(*to_c_train.generate(s.backbone, layers, adam),
                              board=self.mcu.core)
        self.board = self._connect(profile, timeout, retries)
        self.link = self.board.link
        self.steps = 0
        self.classes = layers[-1].shape[0]
        self.param_bytes = 4 * sum(lay.weight.size + lay.bias.size for lay in layers)

    def _connect(self, profile: Any, timeout: float | None, retries: int) -> Any:
        from edgekit.firmware_bridge.board import QemuBoard, SerialBoard
        from edgekit.firmware_bridge.protocol import check_protocol
        from edgekit.targets.mcu import LINK_TIMEOUT, TIMEOUT_MARGIN, expected_seconds

        emulated = self.mcu.port == "qemu"
        head = sum(b.weight.size for b in self.split.head) * HEAD_INSTRUCTIONS_PER_WEIGHT
        expected = (expected_seconds(self.split.backbone, profile or self.mcu.profile, emulated)
                    + head / 100e6)
        link = {"timeout": LINK_TIMEOUT, "retries": retries, "compute_timeout":
                timeout if timeout is not None else LINK_TIMEOUT + TIMEOUT_MARGIN * expected}
        board = (QemuBoard(self.firmware.elf, board=self.mcu.core, **link) if emulated
                 else SerialBoard(self.mcu.port, **link))
        board.link.expected_s = expected
        try:
            check_protocol(board.hello)
            if board.hello.model_hash != self.firmware.model_hash:
                raise EdgekitError(f"the board on {self.mcu.port} runs model "
                                   f"{board.hello.model_hash}, not this training image "
                                   f"({self.firmware.model_hash}): flash {self.firmware.elf}")
        except EdgekitError:
            board.stop()
            raise
        return board

    def _request(self, cmd: int, payload: bytes) -> bytes:
        return request(self.link, cmd, payload)

    def configure(self, weight_decay: float = 0.0, betas: tuple[float, float] = (0.9, 0.999),
                  eps: float = 1e-8) -> None:
        """TRAIN_CONFIG: the optimizer; clears gradients, moments and the step count. Then
        the head's starting weights (the model's): a real board keeps in RAM what an earlier
        run trained until it is reset."""
        self._request(Cmd.TRAIN_CONFIG, struct.pack(
            "<B3xffffff", OPTIMIZERS.index(self.optimizer), weight_decay, *betas, eps,
            1 - betas[0], 1 - betas[1]))
        self.write_params(self.split.layers())
        self.steps = 0

    def _computing(self, cmd: int, head: bytes, sample: np.ndarray) -> bytes:
        """A request whose inputs stream as INFER's do (LOAD, then their CRC-32)."""
        from edgekit.firmware_bridge import stream

        return stream._transfer(self.link, lambda: self._request(
            cmd, stream._inputs(self.link, head, np.ascontiguousarray(sample).tobytes())))

    def step(self, sample: np.ndarray, label: int, count: int, lr: float, first: bool,
             last: bool) -> tuple[int, int, float, int]:
        """One training sample (int8 backbone input) of a mini-batch of ``count``: (backbone
        ticks, head ticks, loss, predicted class)."""
        head = struct.pack("<IBxHH2xf", self.steps + 1, FIRST * first | LAST * last, label,
                           count, lr)
        reply = self._computing(Cmd.TRAIN_STEP, head, sample)
        self.steps += 1
        return struct.unpack("<IIfH2x", reply)

    def predict(self, samples: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """The board's logits for int8 backbone inputs, and the head's ticks per sample."""
        logits, ticks = [], []
        for sample in samples:
            reply = self._computing(Cmd.TRAIN_INFER, b"", sample)
            ticks.append(struct.unpack("<I", reply[4:8])[0])
            logits.append(np.frombuffer(reply[8:], "<f4"))
        return np.array(logits, np.float32).reshape(len(samples), self.classes), ticks

    def read_params(self) -> bytes:
        """The head's float32 weights (TRAIN_READ in chunks), refused if the board has not
        done every step sent since ``configure`` (it rebooted and lost them)."""
        chunk = self.link.last_hello.max_payload - 4
        parts = []
        for offset in range(0, self.param_bytes, chunk):
            reply = self._request(Cmd.TRAIN_READ, struct.pack(
                "<IH", offset, min(chunk, self.param_bytes - offset)))
            if struct.unpack("<I", reply[:4])[0] != self.steps:
                raise EdgekitError("the board lost its training state (it rebooted): train "
                                   "again")
            parts.append(reply[4:])
        return b"".join(parts)

    def write_params(self, layers: list) -> None:
        """Set the head's weights (TRAIN_WRITE in chunks): ``to_c_train.Layer`` s."""
        data = b"".join(np.asarray(a, "<f4").tobytes() for lay in layers
                        for a in (lay.weight, lay.bias))
        chunk = self.link.last_hello.max_payload - 4
        for offset in range(0, len(data), chunk):
            self._request(Cmd.TRAIN_WRITE, struct.pack("<I", offset)
                          + data[offset:offset + chunk])

    def weights(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each layer's (weight, bias) as the board holds them."""
        flat, out, at = np.frombuffer(self.read_params(), "<f4"), [], 0
        for b in self.split.head:
            w = flat[at:at + b.weight.size].reshape(b.weight.shape)
            at += b.weight.size
            out.append((w.copy(), flat[at:at + b.bias.size].copy()))
            at += b.bias.size
        return out

    def instructions(self, ticks: float) -> float:
        """Emulated instructions in ``ticks`` (QEMU -icount; ``McuSession.instructions``)."""
        from edgekit.firmware_bridge.board import ICOUNT_SHIFT

        return ticks * 1e9 / self.board.hello.tick_hz / (1 << ICOUNT_SHIFT)

    def close(self) -> None:
        self.board.stop()

    def __enter__(self) -> BoardHead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def train(head: BoardHead, xq: np.ndarray, y: np.ndarray, epochs: int = 5,
          lr: float | None = None, batch_size: int = 32, seed: int = 0,
          weight_decay: float = 0.0, schedule: str = "cosine", online: bool = False,
          progress: Callable[[Iterable[int]], Iterable[int]] = iter,
          on_epoch: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Train the board's head on int8 backbone inputs ``xq`` in the host trainer's order, at
    its rates: one record per epoch (loss, training accuracy, lr, the mean backbone and head
    instructions per training sample)."""
    from edgekit.learn.rules import RULES
    from edgekit.learn.trainer import epoch_order, epoch_rate

    lr = RULES["bp"].lr if lr is None else lr
    if not (math.isfinite(lr) and lr > 0):
        raise EdgekitError(f"lr must be a positive number, got {lr!r}")
    if type(epochs) is not int or epochs < 1:
        raise EdgekitError(f"epochs must be a positive int, got {epochs!r}")
    batch_size = 1 if online else batch_size
    if type(batch_size) is not int or batch_size < 1:
        raise EdgekitError("batch_size must be a positive int")
    head.configure(weight_decay)
    history = []
    for epoch in progress(range(epochs)):
        rate = epoch_rate(lr, schedule, epoch, epochs)
        order = epoch_order(seed, epoch, len(y), online)
        loss = correct = backbone = trained = 0.0
        for first in range(0, len(y), batch_size):
            idx = order[first:first + batch_size]
            for j, i in enumerate(idx):
                t_bb, t_head, sample_loss, predicted = head.step(
                    xq[i], int(y[i]), len(idx), rate, j == 0, j == len(idx) - 1)
                if not math.isfinite(sample_loss):
                    raise EdgekitError(f"training diverged on the board: loss became "
                                       f"{sample_loss} in epoch {epoch + 1}; lower the "
                                       "learning rate")
                loss += sample_loss
                correct += predicted == y[i]
                backbone += t_bb
                trained += t_head
        record = {"epoch": epoch + 1, "loss": loss / len(y), "accuracy": correct / len(y),
                  "lr": rate, "backbone_instructions": head.instructions(backbone / len(y)),
                  "head_instructions": head.instructions(trained / len(y))}
        history.append(record)
        if on_epoch:
            on_epoch(record)
    return history


def finetune_on_board(graph: Graph, x: np.ndarray, y: np.ndarray, target: str = "mcu:qemu",
                      layers: str | int = "head", optimizer: str = "adam",
                      profile: Any = None, timeout: float | None = None,
                      **hyper: Any) -> tuple[Graph, dict[str, Any]]:
    """Fine-tune float ``graph``'s head on the board of ``target`` (``edgekit finetune
    --target``): the tuned float Graph (its backbone as it was, the head as the board trained
    it) and a history (epochs, the training image's footprint, its measured ELF sizes).
    ``hyper``: ``train``'s epochs, lr, batch_size, seed, weight_decay, schedule, online,
    progress, on_epoch."""
    from edgekit.learn.blocks import from_graph, to_graph
    from edgekit.learn.trainer import _data
    from edgekit.targets.mcu import elf_sizes

    x, y = _data(graph, from_graph(graph), x, y)
    s = split(graph, x[:CALIBRATION_SAMPLES], layers)
    with BoardHead(s, target, optimizer, profile, timeout) as head:
        epochs = train(head, quantized_inputs(s, x), y, **hyper)
        for block, (w, b) in zip(s.head, head.weights(), strict=True):
            block.weight[...] = w
            block.bias[...] = b
        fp = head.footprint
        memory = {"weights": fp.weight_bytes, "gradients": fp.gradient_bytes,
                  "optimizer": fp.optimizer_bytes, "activations": fp.activation_bytes,
                  "training": fp.training_bytes, "sram": fp.sram_bytes,
                  "flash": fp.flash_bytes}
        image = elf_sizes(head.firmware.elf)
    return to_graph(graph, s.blocks), {"rule": "bp", "target": target, "epochs": epochs,
                                       "memory": memory, "image": image}

