"""Agreement metrics between a model's outputs on two backends, or against labels (numpy only)."""

from __future__ import annotations

import numpy as np

from edgekit.errors import EdgekitError


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of ``logits`` (N, classes) against class labels (``class_labels``)."""
    logits = np.asarray(logits)
    y = class_labels(labels, len(logits), logits.shape[-1])
    return float((logits.argmax(-1) == y).mean())


def class_labels(labels: np.ndarray, n: int, classes: int | None = None) -> np.ndarray:
    """``labels`` as ``n`` class indices, shape (n,), int64, each in ``[0, classes)`` when
    ``classes`` is given; anything else raises.

    numpy compares whatever it is given by broadcasting, so a column (n, 1) against n
    predictions, a single label, or one-hot rows all gave an accuracy, and a wrong one. Taken
    as they are meant: a column (n, 1) is squeezed, one-hot rows (one 1 per row, the rest 0)
    become the index of their 1, float labels must be whole numbers; every other shape, a
    different length, bool or text labels, negative or too large indices are refused."""
    y = np.asarray(labels)
    if y.dtype.kind not in "iuf":
        raise EdgekitError(f"labels: got {y.dtype} data; labels are class indices (integers)")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2 and np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all() and (
            classes is None or y.shape[1] == classes):
        y = y.argmax(axis=1)
    if y.ndim != 1:
        raise EdgekitError(f"labels: got shape {y.shape}; pass class indices of shape ({n},) "
                           "(a column (N, 1) and one-hot rows (N, classes) are taken too)")
    if len(y) != n:
        raise EdgekitError(f"labels: got {len(y)} label(s) for {n} sample(s)")
    if y.dtype.kind == "f":
        whole = np.isfinite(y) & (y == np.round(y))
        if not whole.all():
            i = int(np.argmin(whole))
            raise EdgekitError(f"labels: class indices are whole numbers; label {i} is {y[i]}")
    y = y.astype(np.int64)
    bad = (y < 0) | (y >= classes) if classes is not None else y < 0
    if bad.any():
        i = int(np.argmax(bad))
        where = (f"outside [0, {classes - 1}] (the model has {classes} outputs)"
                 if classes is not None else "negative")
        raise EdgekitError(f"labels: {int(bad.sum())} label(s) {where}; label {i} is {y[i]}")
    return y


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.asarray(a).argmax(-1) == np.asarray(b).argmax(-1)).mean())


def max_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom > 0 else float(np.array_equal(a, b))


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """10·log10(signal power / error power) of ``test`` against ``reference`` (SQNR when
    ``test`` is the quantized version); inf when they are identical."""
    ref = np.asarray(reference, np.float64)
    noise = np.sum((ref - np.asarray(test, np.float64)) ** 2)
    signal = np.sum(ref ** 2)
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(signal / noise)) if signal > 0 else float("-inf")


def int8_steps(reference: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """How two int8 results differ in quantization steps: how many values differ, their share
    and the largest difference. SNR and cosine hide what a backend's rounding does; these say
    whether it is bit-exact, and if not how far off it is."""
    diff = np.abs(np.ravel(reference).astype(np.int32) - np.ravel(test).astype(np.int32))
    differing = int(np.count_nonzero(diff))
    return {"values": int(diff.size), "differing": differing,
            "differing_share": differing / diff.size if diff.size else 0.0,
            "max_steps": int(diff.max(initial=0))}


def compare(reference: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """The agreement figures STM32Cube.AI's validate reports, for one pair of outputs."""
    return {"top1_agreement": top1_agreement(reference, test),
            "max_abs_error": max_abs_error(reference, test),
            "cosine": cosine_similarity(reference, test),
            "snr_db": snr_db(reference, test)}
