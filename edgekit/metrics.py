"""Agreement metrics between a model's outputs on two backends, or against labels (numpy only)."""

from __future__ import annotations

import numpy as np


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())


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


def compare(reference: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """The agreement figures STM32Cube.AI's validate reports, for one pair of outputs."""
    return {"top1_agreement": top1_agreement(reference, test),
            "max_abs_error": max_abs_error(reference, test),
            "cosine": cosine_similarity(reference, test),
            "snr_db": snr_db(reference, test)}
