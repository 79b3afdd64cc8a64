"""Exit policies, their calibration, and early-exit inference on the device side (numpy only).

An early-exit Graph keeps every exit as a graph output and says which is which in
``metadata["early_exit"]``: the outputs shallowest first, the encoder blocks each sits after,
the policy calibrated at training and how it was calibrated. A policy looks at one exit's
(frames, classes) log-posteriors and says whether to stop there:

- ``entropy:T``: stop when the mean frame entropy (nats) is at most T;
- ``posterior:P``: stop when the best path's probability (the product over frames of each
  frame's top posterior: the decoded sequence's probability) is at least P;
- ``exit:K``: always stop at exit K (1-based), the fixed "at most so many blocks".

The last exit always stops. ``EarlyExit.transcribe`` runs the Graph step by step
(``Executor.staged``) and stops at the exit the policy accepts: the blocks past it never run.
Evaluation computes every exit once and replays the policy on the recorded posteriors, which is
the same decision on the same numbers (a test checks both agree).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph
from edgekit.speech.ctc import edit_distance, greedy

META = "early_exit"
KINDS = ("entropy", "posterior", "exit")
# Calibrate for half a point above the last exit on the validation voices, so the held-out
# voices (another 300 utterances) stay within the one point: wer:0.01 on validation
# came out 1.1 points above on held-out voices, wer:0.005 0.5 (docs/speech.md).
GOAL = "wer:0.005"


@dataclass(frozen=True)
class Policy:
    kind: str
    value: float

    @classmethod
    def parse(cls, text: str, exits: int) -> Policy:
        """``entropy:T``, ``posterior:P`` or ``exit:K`` (K from 1 to ``exits``)."""
        kind, _, value = str(text).partition(":")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if kind not in KINDS or not np.isfinite(number):
            raise EdgekitError(f"policy {text!r}: use entropy:T, posterior:P or exit:K")
        if kind == "exit" and (number != int(number) or not 1 <= number <= exits):
            raise EdgekitError(f"policy {text!r}: K must be a whole number from 1 to {exits}")
        if kind == "posterior" and not 0 <= number <= 1:
            raise EdgekitError(f"policy {text!r}: P is a probability, from 0 to 1")
        return cls(kind, int(number) if kind == "exit" else number)

    def __str__(self) -> str:
        return f"{self.kind}:{self.value!r}"  # exact: parse(str(p)) == p

    def stops(self, k: int, score: float) -> bool:
        """Whether to stop at exit ``k`` (0-based) whose confidence score (``scores``) is
        ``score``."""
        if self.kind == "exit":
            return k + 1 >= self.value
        return score <= self.value if self.kind == "entropy" else score >= self.value


def scores(kind: str, log_probs: np.ndarray) -> np.ndarray:
    """Each utterance's confidence at one exit from its (..., frames, classes) log-posteriors:
    mean frame entropy for ``entropy``, best-path probability for ``posterior`` (0 for
    ``exit``, which looks at no score).

    Both are sums a board can redo exactly in integers on int8 log-posteriors
    (``fixed_point``): each entropy term -p log p is rounded to a 2^-ENTROPY_BITS grid (the
    sums of grid values are then exact), and an int8 exit's log-posteriors are multiples of
    its scale (1/16, a power of two), whose sums are exact too."""
    lp = np.asarray(log_probs, np.float64)
    if kind == "entropy":
        return _entropy_terms(lp).sum(-1).mean(-1) / 2.0 ** ENTROPY_BITS
    if kind == "posterior":
        return np.exp(lp.max(-1).sum(-1))
    return np.zeros(lp.shape[:-2])


ENTROPY_BITS = 20


def _entropy_terms(lp: np.ndarray) -> np.ndarray:
    """-p log p of each log-posterior, in units of 2^-ENTROPY_BITS, rounded (whole numbers)."""
    return np.round(-(np.exp(lp) * lp) * 2.0 ** ENTROPY_BITS)


def fixed_point(policy: Policy, values: np.ndarray, frames: int,
                classes: int) -> tuple[np.ndarray, int]:
    """The policy as a board evaluates it on int8 log-posteriors: a table of 256 whole
    numbers (by int8 value + 128) and a threshold, such that summing the table over every
    (frame, class) value of the (frames, classes) exit (``entropy``: stop when the sum is at
    most the threshold) or over each frame's largest value (``posterior``: stop when at
    least) decides exactly as ``scores`` and ``Policy.stops`` do on the dequantized values
    (``values``: the 256 int8 values dequantized, float32, as the runtime dequantizes them).

    Exact, not within a tolerance: the host's scores are functions of these integer sums (the
    entropy's mean is sum / frames, a correctly rounded division; the posterior's sum of
    multiples of a power of two is exact), and the threshold is found by searching the sums
    with the same float operations the host applies to them."""
    v = np.asarray(values, np.float32).astype(np.float64)
    if policy.kind == "exit":
        return np.zeros(256, np.int64), 0
    if policy.kind == "entropy":
        table = _entropy_terms(v)
        score = lambda s: np.float64(s) / frames / 2.0 ** ENTROPY_BITS  # noqa: E731
        stops = lambda s: score(s) <= policy.value  # noqa: E731
        n = frames * classes
        return table.astype(np.int64), _last_true(stops, int(table.min()) * n,
                                                  int(table.max()) * n)
    bits = next((b for b in range(64) if np.all(v * 2.0 ** b == np.round(v * 2.0 ** b))), None)
    if bits is None or np.abs(v).max() * 2.0 ** bits * frames >= 2.0 ** 53:
        raise EdgekitError("the exit's int8 scale is not a power of two: a board cannot sum "
                           "its log-posteriors exactly")
    table = np.round(v * 2.0 ** bits)
    stops = lambda s: np.exp(np.float64(s) / 2.0 ** bits) >= policy.value  # noqa: E731
    lo, hi = int(table.min()) * frames, int(table.max()) * frames
    # posterior stops from some sum on: the first whole number that stops (hi + 1: none)
    first = _last_true(lambda s: not stops(s), lo - 1, hi) + 1
    return table.astype(np.int64), first


def _last_true(test, lo: int, hi: int) -> int:
    """The largest whole number s in [lo, hi] with ``test(s)`` for a test true up to some
    point and false after it (lo - 1 when none is)."""
    if not test(lo):
        return lo - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if test(mid) else (lo, mid - 1)
    return lo


@dataclass(frozen=True)
class Exit:
    output: str  # the graph output
    blocks: int  # encoder blocks run before it
    macs: int  # MACs of every step up to its output: what stopping here costs


@dataclass(frozen=True)
class Result:
    text: str
    exit: int  # 1-based
    blocks: int
    macs: int
    instructions: int | None = None  # emulated instructions, where the target counts them


def exits_of(graph: Graph) -> list[Exit]:
    """The exits an early-exit Graph declares, with what reaching each costs."""
    meta = graph.metadata.get(META)
    if not isinstance(meta, dict) or "outputs" not in meta:
        raise EdgekitError("the model is not an early-exit speech model (no early_exit "
                           "metadata); make one with `edgekit asr train`")
    index = {node.outputs[0]: i for i, node in enumerate(graph.nodes)}
    cumulative = np.cumsum([graph.node_macs(node) for node in graph.nodes])
    names, blocks = meta["outputs"], meta.get("blocks")
    if (not isinstance(names, list) or not isinstance(blocks, list) or not names
            or len(names) != len(blocks)
            or any(not isinstance(n, str) or n not in index or n not in graph.outputs
                   for n in names)
            or sorted(names, key=index.__getitem__) != names
            or any(type(b) is not int or b < 1 for b in blocks)):
        raise EdgekitError("the model's early_exit metadata does not match its outputs")
    return [Exit(n, b, int(cumulative[index[n]])) for n, b in zip(names, blocks)]


def stored_policy(graph: Graph) -> Policy:
    """The policy calibrated at training (``metadata["early_exit"]["policy"]``)."""
    exits = exits_of(graph)
    return Policy.parse(graph.metadata[META].get("policy", f"exit:{len(exits)}"), len(exits))


class EarlyExit:
    """Transcribes features on the edgekit runtime, stopping at the exit the policy accepts."""

    def __init__(self, graph: Graph):
        from edgekit.runtime import executor_for

        self.graph = graph
        self.exits = exits_of(graph)
        self.executor = executor_for(graph)

    def transcribe(self, features: np.ndarray, policy: Policy) -> Result:
        """One utterance's (MELS, FRAMES) features: the text at the first exit the policy
        accepts, and what was computed to get there."""
        run = self.executor.staged(np.ascontiguousarray(features[None], np.float32))
        for k, ex in enumerate(self.exits):
            lp = run.until(ex.output)[0]
            if k + 1 == len(self.exits) or policy.stops(k, float(scores(policy.kind, lp))):
                return Result(greedy(lp), k + 1, ex.blocks, ex.macs)
        raise AssertionError("unreachable: the last exit always stops")

    def close(self) -> None:
        """Nothing to release (``SegmentedExit`` holds target sessions)."""

    def all_exits(self, x: np.ndarray, batch: int = 64) -> list[np.ndarray]:
        """Every exit's (N, frames, classes) log-posteriors for features ``x`` (N, MELS,
        FRAMES): the whole Graph, for evaluation and calibration."""
        outs = [[] for _ in self.exits]
        position = {name: i for i, name in enumerate(self.graph.outputs)}
        for lo in range(0, len(x), batch):
            got = self.executor.run(np.ascontiguousarray(x[lo:lo + batch], np.float32))
            got = got if isinstance(got, list) else [got]
            for k, ex in enumerate(self.exits):
                outs[k].append(got[position[ex.output]])
        return [np.concatenate(o) for o in outs]


class SegmentedExit:
    """``EarlyExit`` on any target: the Graph cut at its exits (``export.segments``), each
    segment deployed on ``target`` when first needed and run after the one before while the
    policy says go on. The encoder state crosses between segments as float (an int8 one is
    dequantized and quantized again with the same parameters, which gives the same int8)."""

    def __init__(self, graph: Graph, target: str, **options):
        from edgekit.speech.export import segments

        self.graph = graph
        self.exits = exits_of(graph)
        self.segments = segments(graph)
        self.target, self.options = target, options
        self.sessions: list = [None] * len(self.segments)

    def transcribe(self, features: np.ndarray, policy: Policy) -> Result:
        import edgekit.targets

        tensors = {self.graph.inputs[0]: np.ascontiguousarray(features[None], np.float32)}
        instructions = 0
        for k, (ex, seg) in enumerate(zip(self.exits, self.segments)):
            if self.sessions[k] is None:
                self.sessions[k] = edgekit.targets.deploy(seg, self.target, **self.options)
            session = self.sessions[k]
            outs = session.run({name: tensors[name] for name in seg.inputs})
            tensors.update(zip(seg.outputs, outs if isinstance(outs, list) else [outs]))
            if getattr(session, "last_ticks", None) is not None:  # a board: its step timers
                instructions += sum(map(session.instructions, session.last_ticks))
            lp = tensors[ex.output][0]
            if k + 1 == len(self.exits) or policy.stops(k, float(scores(policy.kind, lp))):
                return Result(greedy(lp), k + 1, ex.blocks, ex.macs, instructions or None)
        raise AssertionError("unreachable: the last exit always stops")

    def close(self) -> None:
        for session in self.sessions:
            if session is not None:
                session.close()


@dataclass
class Replay:
    """Every exit's decoding of a labelled set, so any policy can be scored without rerunning:
    per utterance and exit the hypothesis, word and character edits, and confidence scores."""

    refs: list[str]
    hyps: list[list[str]]  # [exit][utterance]
    word_edits: np.ndarray  # (N, exits)
    char_edits: np.ndarray  # (N, exits)
    scores: dict[str, np.ndarray]  # kind -> (N, exits)
    exits: list[Exit]

    @classmethod
    def of(cls, exits: list[Exit], log_probs: list[np.ndarray], refs: list[str]) -> Replay:
        hyps = [[greedy(u) for u in lp] for lp in log_probs]
        words = np.array([[edit_distance(r.split(), h[n].split()) for h in hyps]
                          for n, r in enumerate(refs)])
        chars = np.array([[edit_distance(r, h[n]) for h in hyps] for n, r in enumerate(refs)])
        sc = {kind: np.stack([scores(kind, lp) for lp in log_probs], 1)
              for kind in ("entropy", "posterior")}
        return cls(refs, hyps, words, chars, sc, exits)

    def subset(self, keep: np.ndarray) -> Replay:
        """The replay of the utterances ``keep`` (indices or a mask) only."""
        idx = np.arange(len(self.refs))[keep]
        return Replay([self.refs[i] for i in idx], [[h[i] for i in idx] for h in self.hyps],
                      self.word_edits[idx], self.char_edits[idx],
                      {k: v[idx] for k, v in self.scores.items()}, self.exits)

    def choose(self, policy: Policy) -> np.ndarray:
        """The 0-based exit the policy stops at, per utterance."""
        n, e = self.word_edits.shape
        if policy.kind == "exit":
            return np.full(n, policy.value - 1)
        s = self.scores[policy.kind]
        stop = s <= policy.value if policy.kind == "entropy" else s >= policy.value
        stop[:, -1] = True
        return stop.argmax(1)

    def report(self, chosen: np.ndarray) -> dict:
        """WER, CER, mean blocks and MACs of stopping at ``chosen`` exits."""
        rows = np.arange(len(chosen))
        blocks = np.array([ex.blocks for ex in self.exits])
        macs = np.array([ex.macs for ex in self.exits])
        return {"wer": float(self.word_edits[rows, chosen].sum() / self._words()),
                "cer": float(self.char_edits[rows, chosen].sum() / self._chars()),
                "mean_blocks": float(blocks[chosen].mean()),
                "mean_macs": float(macs[chosen].mean())}

    def per_exit(self) -> list[dict]:
        return [{"exit": k + 1, "blocks": ex.blocks, "macs": ex.macs,
                 **self.report(np.full(len(self.refs), k))} for k, ex in enumerate(self.exits)]

    def thresholds(self, kind: str, points: int = 60) -> list[Policy]:
        """``kind`` policies at thresholds just inside the quantiles of the scores at the exits
        before the last: the operating points from (nearly) always going on to always
        stopping at exit 1."""
        s = self.scores[kind][:, :-1].ravel()
        if not s.size:  # one exit (or no utterances): nothing to choose
            return []
        quantiles = np.quantile(s, np.linspace(0, 1, points))
        values = quantiles + 1e-9 if kind == "entropy" else np.clip(quantiles - 1e-12, 0, 1)
        return [Policy(kind, float(t)) for t in np.unique(values)]

    def curve(self, kind: str, points: int = 60) -> list[dict]:
        """WER and compute at each of ``thresholds``, from the most to the least compute."""
        out = [{"policy": str(p), **self.report(self.choose(p))}
               for p in self.thresholds(kind, points)]
        return sorted(out, key=lambda r: -r["mean_blocks"])

    def _words(self) -> int:
        return max(sum(len(r.split()) for r in self.refs), 1)

    def _chars(self) -> int:
        return max(sum(len(r) for r in self.refs), 1)


def calibrate(replay: Replay, goal: str = GOAL) -> tuple[Policy, dict]:
    """The policy (an entropy or posterior threshold, or a fixed exit) that meets ``goal`` on
    a validation replay with the least compute: ``wer:D``, WER at most D above the last
    exit's; or ``blocks:F``, mean blocks at most F of the encoder, with the lowest WER."""
    kind, _, value = goal.partition(":")
    try:
        bound = float(value)
    except ValueError:
        bound = float("nan")
    if kind not in ("wer", "blocks") or not np.isfinite(bound) or bound < 0:
        raise EdgekitError(f"calibration goal {goal!r}: use wer:D (e.g. wer:0.01) or "
                           "blocks:F (e.g. blocks:0.6)")
    last = replay.report(np.full(len(replay.refs), len(replay.exits) - 1))
    total = replay.exits[-1].blocks
    fixed = [Policy("exit", k + 1) for k in range(len(replay.exits))]
    candidates = fixed + replay.thresholds("entropy", 200) + replay.thresholds("posterior", 200)
    points = [(p, replay.report(replay.choose(p))) for p in candidates]
    if kind == "wer":
        ok = [(p, r) for p, r in points if r["wer"] <= last["wer"] + bound + 1e-12]
        policy, report = min(ok, key=lambda pr: (pr[1]["mean_blocks"], pr[1]["wer"]))
    else:
        ok = [(p, r) for p, r in points if r["mean_blocks"] <= bound * total + 1e-12]
        if not ok:
            raise EdgekitError(f"no threshold keeps the mean below {bound:.0%} of the encoder")
        policy, report = min(ok, key=lambda pr: (pr[1]["wer"], pr[1]["mean_blocks"]))
    return policy, {"goal": goal, "valid": report, "valid_last_exit": last}
