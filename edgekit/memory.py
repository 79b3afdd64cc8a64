"""New classes without training: a k-NN head over the deployed backbone's features.

A visual memory (Geirhos et al. 2024, "Towards flexible perception with visual memory"; AdaNPC,
Zhang et al. 2023) replaces the trained classifier by labelled exemplars: the backbone is the
deployed Graph cut at a feature tensor (by default the input of its last linear layer, the
penultimate features), a class is added by storing the features of a few of its examples and
removed by deleting them, and a sample is labelled by its k nearest exemplars. Nothing is
trained, so adding a class cannot disturb the others.

The memory holds the backbone's own classes too (exemplars from its training data, added like
any other class) and the trained head is not used: measured on digits with 20 exemplars per old
class, the k-NN stays within 2 points of the head on the old classes (most of the loss is old
images taken for a new class); the combination "the head's answer unless the k-NN names a new
class" wins back only half a point, gets the new classes exactly as the k-NN does, needs both
outputs from the board, and cannot remove one of the backbone's classes, which a memory can
(``benchmarks/memory_digits.py``; docs/learning.md, "New classes without training").

Features come from any Session that runs the cut Graph (``target``: the edgekit runtime, ONNX
Runtime, LiteRT, the board): an int8 backbone's features stay int8 in the memory, with the
tensor's quantization, and are compared in integer arithmetic (zero point subtracted, dot
products and squared norms accumulated in int32); on ``mcu:*`` the board computes the features
and the host runs the k-NN. The memory is bounded (``max_exemplars``, or a share of the device
profile's flash); when full, every class keeps the same share, each its most central exemplars
(nearest its mean feature): a new class with fewer shots than a share keeps them all, and the
old classes give up their least typical exemplars to make room.

The memory file is an ``.npz`` of plain arrays (features, labels, a JSON header as bytes), read
with ``allow_pickle=False`` and written atomically (``edgekit.fileio``).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_write
from edgekit.graph import Graph, QuantParams
from edgekit.limits import check_npz

FORMAT = 1
METRICS = ("cosine", "l2")
DEFAULT_K = 1  # measured on digits: best from 5 shots (7 points above k=3), within 1 from 20
DEFAULT_METRIC = "l2"  # measured on digits: 3-5 points above cosine on the new classes
PROFILE_SHARE = 0.25  # of the flash the model's weights leave free


def penultimate(graph: Graph) -> str:
    """The input of the Graph's last linear layer: the features its classifier reads."""
    linears = [n for n in graph.nodes if n.op == "linear"]
    if not linears:
        raise EdgekitError("the model has no linear layer whose input could be its features; "
                           "name the feature tensor (feature=, --feature)")
    return linears[-1].inputs[0]


def cut(graph: Graph, tensor: str) -> Graph:
    """The part of ``graph`` that computes ``tensor``, with ``tensor`` as its one output."""
    if tensor not in graph.tensors:
        raise EdgekitError(f"no tensor {tensor!r} in the model (edgekit inspect MODEL lists "
                           "the layers)")
    if tensor in graph.inputs:
        raise EdgekitError(f"{tensor!r} is an input of the model, not a feature it computes")
    producers = graph.producers()
    needed, todo = set(), [tensor]
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        if name in producers:
            todo.extend(producers[name].inputs)
    nodes = [n for n in graph.nodes if set(n.outputs) & needed]
    used = {t for n in nodes for t in (*n.inputs, *n.outputs)} | {tensor}
    return Graph(inputs=[t for t in graph.inputs if t in used], outputs=[tensor],
                 tensors={k: v for k, v in graph.tensors.items() if k in used},
                 nodes=nodes, params={k: v for k, v in graph.params.items() if k in used},
                 metadata=dict(graph.metadata)).validate()


class Backbone:
    """The deployed Graph up to its feature tensor, compiled for ``target``: ``features(x)``
    gives one row per sample, int8 (with ``quant``) for an int8 Graph, float32 otherwise."""

    def __init__(self, graph: Graph, feature: str | None = None, target: str = "cpu",
                 **options: Any):
        from edgekit.targets import deploy

        self.model = graph
        self.feature = feature or penultimate(graph)
        self.graph = cut(graph, self.feature)
        info = self.graph.tensors[self.feature]
        if info.dtype not in ("int8", "float32"):
            raise EdgekitError(f"feature tensor {self.feature!r} is {info.dtype}; a memory "
                               "holds int8 or float32 features")
        if info.dtype == "int8" and (info.quant is None or len(info.quant.scale) != 1):
            raise EdgekitError(f"feature tensor {self.feature!r} needs one per-tensor scale")
        self.dtype = info.dtype
        self.quant: QuantParams | None = info.quant
        self.dim = math.prod(info.shape[1:])
        self.target = target
        self.session = deploy(self.graph, target=target, **options)

    @property
    def fingerprint(self) -> str:
        """What the stored features depend on: the cut Graph's tensor, quantization and
        weights. A memory made with another backbone would compare unlike features."""
        h = hashlib.sha256(json.dumps([self.feature, self.dtype, self.quant and
                                       self.quant.to_json()]).encode())
        for name in sorted(self.graph.params):
            h.update(name.encode())
            h.update(np.ascontiguousarray(self.graph.params[name]).tobytes())
        return h.hexdigest()[:16]

    def features(self, x: np.ndarray) -> np.ndarray:
        """Rows of features. Every Session hands int8 outputs back dequantized; quantizing
        them again with the same parameters gives back the board's int8 values exactly."""
        from edgekit.quant.edge import quantize_array

        y = np.asarray(self.session.run(x)).reshape(len(x), -1)
        return quantize_array(y, self.quant) if self.dtype == "int8" else y.astype(np.float32)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Backbone:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def capacity_for(profile: Any, backbone: Backbone, share: float = PROFILE_SHARE) -> int:
    """Exemplars a device holds: ``share`` of the flash the model's weights leave free, at the
    feature row plus a 4-byte label each."""
    from edgekit.profile.devices import load_profile

    prof = load_profile(profile)
    weights = sum(p.nbytes for p in backbone.model.params.values())
    free = prof.flash_bytes - weights
    row = backbone.dim * np.dtype(backbone.dtype).itemsize + 4
    if free <= 0:
        raise EdgekitError(f"the model's weights ({weights:,} B) leave no flash on "
                           f"{prof.name} for a memory")
    return int(share * free) // row


class Memory:
    """Labelled exemplars over a ``Backbone``, bounded to ``max_exemplars`` (default: from the
    target's device profile, see ``capacity_for``)."""

    def __init__(self, backbone: Backbone, max_exemplars: int | None = None,
                 metric: str = DEFAULT_METRIC, k: int = DEFAULT_K, profile: Any = None):
        self.backbone = backbone
        if max_exemplars is None:
            max_exemplars = capacity_for(profile or _target_profile(backbone.target), backbone)
        self.configure(max_exemplars=max_exemplars, metric=metric, k=k)
        self.features = np.empty((0, backbone.dim), backbone.dtype)
        self.labels = np.empty(0, np.int64)

    def configure(self, max_exemplars: int | None = None, metric: str | None = None,
                  k: int | None = None) -> None:
        """Change the bound (a smaller one evicts now), the metric or k."""
        if metric is not None:
            if metric not in METRICS:
                raise EdgekitError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
            self.metric = metric
        if k is not None:
            if type(k) is not int or k < 1:
                raise EdgekitError(f"k must be a positive integer, got {k!r}")
            self.k = k
        if max_exemplars is not None:
            if type(max_exemplars) is not int or max_exemplars < 1:
                raise EdgekitError(f"max_exemplars must be a positive integer, got "
                                   f"{max_exemplars!r}")
            self.max_exemplars = max_exemplars
            if hasattr(self, "labels"):
                self._bound()

    def counts(self) -> dict[int, int]:
        """Exemplars per label."""
        labels, counts = np.unique(self.labels, return_counts=True)
        return {int(a): int(b) for a, b in zip(labels, counts, strict=True)}

    def add(self, x: np.ndarray, labels: int | np.ndarray) -> dict[int, int]:
        """Store the features of inputs ``x`` under ``labels`` (one label for all, or one per
        input); returns the counts per label after the bound is applied."""
        labels = np.broadcast_to(np.asarray(labels), (len(x),))
        if labels.dtype.kind not in "iu" or (labels < 0).any():
            raise EdgekitError("labels are non-negative integers (class indices)")
        self.features = np.concatenate([self.features, self.backbone.features(x)])
        self.labels = np.concatenate([self.labels, labels.astype(np.int64)])
        self._bound()
        return self.counts()

    def remove(self, label: int) -> int:
        """Forget a class; returns how many exemplars it had."""
        gone = self.labels == label
        if not gone.any():
            raise EdgekitError(f"no class {label} in the memory (it holds "
                               f"{sorted(self.counts()) or 'none'})")
        self.features, self.labels = self.features[~gone], self.labels[~gone]
        return int(gone.sum())

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The label of each input by its k nearest exemplars: the most frequent label among
        them, a tie going to the label of the nearer exemplar."""
        if not len(self.labels):
            raise EdgekitError("the memory is empty: add examples of a class first")
        sim = self.similarity(self.backbone.features(x))
        k = min(self.k, len(self.labels))
        top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        classes, index = np.unique(self.labels, return_inverse=True)
        votes = np.zeros((len(x), len(classes)))
        rows = np.arange(len(x))[:, None]
        # a vote is worth k+1 tie-breakers; the nearest neighbour breaks ties
        np.add.at(votes, (rows, index[top]), k + 1.0)
        np.add.at(votes, (rows, index[top]), np.arange(k, 0, -1) / k)
        return classes[votes.argmax(1)]

    def similarity(self, feats: np.ndarray) -> np.ndarray:
        """(queries, exemplars): cosine similarity, or minus the squared L2 distance. int8
        features are compared as integers (zero point subtracted, accumulated in int32; in
        int64 only where a row is too long for int32)."""
        a, b = _centered(feats, self.backbone), _centered(self.features, self.backbone)
        dot = a @ b.T
        qn, mn = (a * a).sum(1), (b * b).sum(1)
        if self.metric == "l2":
            return -(qn[:, None] + mn[None, :] - 2 * dot).astype(np.float64)
        return dot / np.sqrt(np.maximum(qn[:, None] * mn[None, :], 1e-30).astype(np.float64))

    def _bound(self) -> None:
        """Apply ``max_exemplars``: equal shares per class (a class with fewer keeps all, its
        unused share going to the others), each class keeping its most central exemplars."""
        if len(self.labels) <= self.max_exemplars:
            return
        counts = self.counts()
        if len(counts) > self.max_exemplars:
            raise EdgekitError(f"the memory holds at most {self.max_exemplars} exemplars, fewer "
                               f"than its {len(counts)} classes")
        quota, left = {}, self.max_exemplars
        for n, (label, count) in enumerate(sorted(counts.items(), key=lambda c: c[1])):
            quota[label] = min(count, left // (len(counts) - n))
            left -= quota[label]
        keep = []
        for label, q in quota.items():
            idx = np.flatnonzero(self.labels == label)
            rows = _centered(self.features[idx], self.backbone).astype(np.float64)
            dist = ((rows - rows.mean(0)) ** 2).sum(1)
            keep.append(idx[np.argsort(dist, kind="stable")[:q]])
        keep = np.sort(np.concatenate(keep))
        self.features, self.labels = self.features[keep], self.labels[keep]

    def save(self, path: str | Path) -> Path:
        """Write the memory as an ``.npz`` of plain arrays, atomically."""
        header = {"format": FORMAT, "fingerprint": self.backbone.fingerprint,
                  "feature": self.backbone.feature, "dtype": self.backbone.dtype,
                  "metric": self.metric, "k": self.k, "max_exemplars": self.max_exemplars}
        with atomic_write(path) as f:
            np.savez(f, features=self.features, labels=self.labels,
                     header=np.frombuffer(json.dumps(header).encode(), np.uint8))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, backbone: Backbone) -> Memory:
        """A saved memory over ``backbone``; refused if it was made with another backbone."""
        arrays = _read(Path(path))
        try:
            header = json.loads(arrays["header"].tobytes())
            assert isinstance(header, dict) and header.get("format") == FORMAT
            fingerprint, feature = header["fingerprint"], header["feature"]
            mem = cls(backbone, max_exemplars=header["max_exemplars"], metric=header["metric"],
                      k=header["k"])
        except (ValueError, KeyError, AssertionError, TypeError, EdgekitError):
            raise EdgekitError(f"{path}: not an edgekit memory file (bad header)") from None
        if fingerprint != backbone.fingerprint:
            raise EdgekitError(f"{path}: made with another backbone (feature {feature!r}, "
                               f"{header.get('dtype')}); this model's is {backbone.feature!r}, "
                               f"{backbone.dtype}")
        feats, labels = arrays["features"], arrays["labels"]
        if (feats.dtype != np.dtype(backbone.dtype) or feats.shape[1:] != (backbone.dim,)
                or labels.dtype != np.int64 or labels.shape != (len(feats),)
                or (labels < 0).any() or len(labels) > mem.max_exemplars):
            raise EdgekitError(f"{path}: features or labels do not match its header")
        mem.features, mem.labels = feats, labels
        return mem


def _centered(feats: np.ndarray, backbone: Backbone) -> np.ndarray:
    """int8 rows minus the zero point in int32 (int64 where 255² x the row length overflows
    int32), float rows as float64."""
    if backbone.dtype != "int8":
        return feats.astype(np.float64)
    acc = np.int32 if 255 ** 2 * backbone.dim < 2 ** 31 else np.int64
    return feats.astype(acc) - acc(backbone.quant.zero_point[0])


def _target_profile(target: str) -> str:
    from edgekit.targets import get_target

    return get_target(target).profile or "host"


def _read(path: Path) -> dict[str, np.ndarray]:
    check_npz(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = {"features", "labels", "header"} - set(data.files)
            if missing:
                raise EdgekitError(f"{path}: not an edgekit memory file (no "
                                   f"{', '.join(sorted(missing))})")
            return {k: data[k] for k in ("features", "labels", "header")}
    except EdgekitError:
        raise
    except FileNotFoundError:
        raise EdgekitError(f"{path}: no such file") from None
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise EdgekitError(f"{path}: holds Python objects (a pickle); edgekit reads only "
                               "numeric arrays") from None
        raise EdgekitError(f"{path}: not an edgekit memory file ({err})") from None
    except Exception as err:
        raise EdgekitError(f"{path}: not an edgekit memory file ({err})") from None
