"""CTC labels, greedy decoding and error rates, in numpy (training and device side alike).

Classes are the CTC blank (index 0) then ``CHARS``; a transcript is lower-case letters, spaces
and apostrophes.
"""

from __future__ import annotations

import numpy as np

from edgekit.errors import EdgekitError

CHARS = " abcdefghijklmnopqrstuvwxyz'"
CLASSES = 1 + len(CHARS)  # blank first
_INDEX = {c: i + 1 for i, c in enumerate(CHARS)}


def encode(text: str) -> np.ndarray:
    """Class indices of ``text`` (1-based: 0 is the blank)."""
    try:
        return np.array([_INDEX[c] for c in text], np.int64)
    except KeyError as err:
        raise EdgekitError(f"transcript {text!r} has {err.args[0]!r}, outside {CHARS!r}") from None


def greedy(log_probs: np.ndarray) -> str:
    """Best path of one utterance's (frames, CLASSES) posteriors: the argmax per frame, repeats
    merged, blanks dropped."""
    best = np.asarray(log_probs).argmax(axis=-1)
    keep = best[np.r_[True, best[1:] != best[:-1]] & (best != 0)]
    return " ".join("".join(CHARS[i - 1] for i in keep).split())


def edit_distance(ref: list | str, hyp: list | str) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    row = np.arange(len(hyp) + 1)
    for i, r in enumerate(ref, 1):
        prev, row = row, np.empty_like(row)
        row[0] = i
        for j, h in enumerate(hyp, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (r != h))
    return int(row[-1])


def wer(refs: list[str], hyps: list[str]) -> float:
    """Word error rate over a corpus: total word edits over total reference words."""
    return _rate([r.split() for r in refs], [h.split() for h in hyps])


def cer(refs: list[str], hyps: list[str]) -> float:
    """Character error rate over a corpus (spaces count as characters)."""
    return _rate(refs, hyps)


def _rate(refs: list, hyps: list) -> float:
    if len(refs) != len(hyps) or not refs:
        raise EdgekitError(f"{len(refs)} references and {len(hyps)} hypotheses")
    return sum(edit_distance(r, h) for r, h in zip(refs, hyps)) / max(sum(map(len, refs)), 1)
