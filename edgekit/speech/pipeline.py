"""From nothing to a deployable early-exit Graph: corpus, training, lowering, calibration, int8.

``build`` trains the multi-exit encoder (``model.train``), lowers it with every exit as a graph
output, records which output is which exit in ``metadata["early_exit"]``, and calibrates the
stored policy on the validation voices; ``quantize`` makes the int8 Graph (every exit int8) and
calibrates its own policy, since int8 posteriors move the scores a little. ``evaluate`` scores
a Graph on a split with any policy.
"""

from __future__ import annotations

import numpy as np

from edgekit.graph import Graph
from edgekit.speech import corpus, frontend
from edgekit.speech.ctc import CHARS
from edgekit.speech.exits import GOAL, META, EarlyExit, Policy, Replay, calibrate, stored_policy

VALID_UTTERANCES = 300
CALIBRATION_SAMPLES = 200  # int8 activation ranges


def split_features(split: str, count: int, seed: int = 0, snr: float | None = None,
                   noise: str = "white", cache=None) -> tuple[np.ndarray, list[str]]:
    """Features and transcripts of the first ``count`` utterances of ``split``."""
    clips = corpus.utterances(split, count, seed, snr, noise, cache)
    return frontend.batch([u.audio for u in clips]), [u.text for u in clips]


def to_graph(model, exit_every: int) -> Graph:
    """The torch model lowered with its exits as outputs, shallowest first, and described."""
    import torch

    import edgekit

    example = torch.zeros(1, frontend.MELS, frontend.FRAMES)
    graph = edgekit.from_torch(model.eval(), (example,))
    graph.metadata[META] = {
        "outputs": list(graph.outputs),
        "blocks": [exit_every * (k + 1) for k in range(len(graph.outputs))],
        "chars": CHARS,
        "frontend": {"sample_rate": frontend.SAMPLE_RATE, "mels": frontend.MELS,
                     "frames": frontend.FRAMES},
    }
    return graph


def calibrate_graph(graph: Graph, x: np.ndarray, texts: list[str], goal: str) -> Replay:
    """Choose and store the policy that meets ``goal`` on the features ``x``; the replay."""
    runner = EarlyExit(graph)
    replay = Replay.of(runner.exits, runner.all_exits(x), texts)
    policy, info = calibrate(replay, goal)
    graph.metadata[META]["policy"] = str(policy)
    graph.metadata[META]["calibration"] = info
    return replay


def build(cfg, goal: str = GOAL, cache=None, log=print) -> Graph:
    """Train (``cfg``: ``model.TrainConfig``), lower and calibrate the float Graph."""
    from edgekit.speech.model import train

    model = train(cfg, cache, log)
    graph = to_graph(model, cfg.exit_every)
    x, texts = split_features("valid", cfg.valid_utterances, cfg.seed, cache=cache)
    calibrate_graph(graph, x, texts, goal)
    log(f"policy {graph.metadata[META]['policy']} on the validation voices: "
        f"{graph.metadata[META]['calibration']['valid']}")
    return graph


def quantize(graph: Graph, seed: int = 0, goal: str = GOAL, cache=None,
             valid: int = VALID_UTTERANCES, samples: int = CALIBRATION_SAMPLES) -> Graph:
    """The int8 Graph (activation ranges from ``samples`` training clips), its policy
    calibrated anew on ``valid`` validation utterances."""
    import edgekit

    calib, _ = split_features("train", samples, seed, cache=cache)
    q = edgekit.quantize(graph, calib)
    x, texts = split_features("valid", valid, seed, cache=cache)
    calibrate_graph(q, x, texts, goal)
    return q


def evaluate(graph: Graph, voices: str = "held-out", count: int = 300, seed: int = 0,
             snr: float | None = None, noise: str = "white", policy: str | None = None,
             cache=None) -> dict:
    """WER, CER, mean blocks and MACs per exit and for the policy (the stored one unless
    ``policy``) on ``count`` utterances of ``voices``; the same for its digit sequences."""
    runner = EarlyExit(graph)
    chosen = (stored_policy(graph) if policy is None
              else Policy.parse(policy, len(runner.exits)))
    x, texts = split_features(voices, count, seed, snr, noise, cache)
    replay = Replay.of(runner.exits, runner.all_exits(x), texts)
    is_digits = np.array([t.split()[0] in corpus.DIGITS for t in texts])
    digits = replay.subset(is_digits) if is_digits.any() else None
    return {"voices": voices, "snr": snr, "noise": noise if snr is not None else None,
            "utterances": count, "exits": replay.per_exit(),
            "policy": {"policy": str(chosen), **replay.report(replay.choose(chosen))},
            "digit_sequences": digits and {
                "utterances": len(digits.refs), "exits": digits.per_exit(),
                "policy": digits.report(digits.choose(chosen))}}
