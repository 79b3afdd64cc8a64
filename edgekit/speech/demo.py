"""``edgekit demo --asr``: early-exit speech recognition end to end in a minute or two.

A small corpus is synthesized (espeak-ng and sox), a small multi-exit encoder is trained from
scratch for a fixed time, lowered with its exits, calibrated, quantized to int8; then WER and
compute per exit and for the stored policy on held-out voices, a few transcriptions that stop at
the exit the policy accepts on the edgekit runtime, and, where the Arm toolchain and QEMU are
installed, the int8 model as one firmware image that decides on the emulated board itself.
The model is small and trained briefly, so its WER is far from what ``edgekit asr train``
reaches (docs/speech.md): the demo shows the mechanism, not the accuracy.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.console import table
from edgekit.speech import corpus, pipeline
from edgekit.speech.exits import EarlyExit, Replay, stored_policy
from edgekit.speech.model import TrainConfig

# 12 epochs of 600 clips (each utterance clean and noisy) at batch 16: a fixed number of steps,
# so the demo's model is the same on any machine (a time budget would train less on a slow one)
DEMO = TrainConfig(blocks=6, channels=32, train_utterances=300, valid_utterances=60,
                   epochs=12, batch=16, lr=6e-3)
HELD_OUT = 60
BOARD_UTTERANCES = 8


def run(out: Path, cfg: TrainConfig = DEMO, held_out: int = HELD_OUT,
        board: int = BOARD_UTTERANCES, cache=None) -> dict[str, Any]:
    """The speech stage; writes ``asr.ekm`` and ``asr.int8.ekm`` into ``out``."""
    import torch

    corpus.require_tools()
    torch.set_num_threads(min(torch.get_num_threads(), 4))
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    print(f"\nearly-exit speech: {cfg.train_utterances} synthesized training utterances, "
          f"{cfg.blocks} blocks with an exit every {cfg.exit_every}, trained from scratch "
          f"for {cfg.epochs} epochs")
    graph = pipeline.build(cfg, cache=cache, log=lambda line: None)
    graph.save(out / "asr.ekm")
    g8 = pipeline.quantize(graph, cfg.seed, cache=cache, valid=cfg.valid_utterances,
                           samples=min(100, cfg.train_utterances))
    g8.save(out / "asr.int8.ekm")
    x, texts = pipeline.split_features("held-out", held_out, cfg.seed, cache=cache)
    report: dict[str, Any] = {"seconds_to_train": time.perf_counter() - start}
    rows = []
    for name, g in (("float", graph), ("int8", g8)):
        runner = EarlyExit(g)
        replay = Replay.of(runner.exits, runner.all_exits(x), texts)
        policy = stored_policy(g)
        report[name] = {"exits": replay.per_exit(), "policy": {
            "policy": str(policy), **replay.report(replay.choose(policy))}}
        rows += [(name, f"exit {r['exit']}", r["blocks"], r["macs"], f"{r['wer']:.1%}")
                 for r in report[name]["exits"]]
        p = report[name]["policy"]
        rows.append((name, p["policy"], f"{p['mean_blocks']:.2f}", f"{p['mean_macs']:,.0f}",
                     f"{p['wer']:.1%}"))
    print(f"{held_out} held-out-voice utterances:")
    print(table(["model", "exit / policy", "blocks", "MACs", "WER"], rows))
    runner = EarlyExit(g8)
    said = [runner.transcribe(xi, stored_policy(g8)) for xi in x[:3]]
    for ref, r in zip(texts, said):
        print(f"  said {ref!r}: heard {r.text!r} at exit {r.exit} ({r.blocks} blocks, "
              f"{r.macs:,} MACs; the blocks past it never ran)")
    report["transcribed"] = [{"text": ref, "heard": r.text, "exit": r.exit}
                             for ref, r in zip(texts, said)]
    report["board"] = on_the_board(g8, x[:board]) if board else {"skipped": "not asked"}
    report["seconds"] = time.perf_counter() - start
    print(f"speech stage: {report['seconds']:.0f} s; models in {out}/asr.ekm, asr.int8.ekm")
    return report


def on_the_board(g8, x: np.ndarray) -> dict[str, Any]:
    """The int8 model on mcu:qemu, deciding the stored policy itself, against the host."""
    from edgekit.speech.board import BoardExit
    from edgekit.targets import get_target

    ok, why = get_target("mcu:qemu").available()
    if not ok:
        print(f"  board stage skipped: {why}")
        return {"skipped": why}
    policy, host = stored_policy(g8), EarlyExit(g8)
    board = BoardExit(g8, "mcu:qemu")
    try:
        got = [(board.transcribe(xi, policy), host.transcribe(xi, policy)) for xi in x]
    finally:
        board.close()
    same = sum((b.exit, b.text) == (h.exit, h.text) for b, h in got)
    print(f"  on the emulated Cortex-M3, one image deciding {policy} itself: exit and text equal "
          f"to the host's on {same} of {len(x)}; emulated instructions: "
          + ", ".join(f"exit {b.exit} {b.instructions / 1e6:.1f} M" for b, _ in got))
    return {"utterances": len(x), "same_as_host": same,
            "exits": [b.exit for b, _ in got], "instructions": [b.instructions for b, _ in got]}
