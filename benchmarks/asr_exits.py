"""Early-exit speech recognition: WER per exit (float and int8, clean and at 10 dB SNR) on
held-out voices, the entropy and posterior policy curves (WER against mean encoder blocks),
the calibrated policy against the issue's goal, the single-exit baseline of the same depth,
batch-1 latency per exit on the edgekit runtime (it stops at the exit) and, with ``--board``,
the int8 model on mcu:qemu deciding the policy on the board itself (its exits against the
host's, its emulated instructions by exit).

Run: ``python benchmarks/asr_exits.py --model asr.ekm [--int8 asr.int8.ekm] [--baseline
single.ekm] [--count 300] [--board N] [--plot curves.png] [--json out.json]``. The models come from
``edgekit asr train -o asr.ekm --quantize int8`` and the baseline (only the last exit trained,
same depth and epochs) from ``edgekit asr train -o single.ekm --single-exit``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import edgekit
from edgekit.console import table
from edgekit.fileio import atomic_write_bytes
from edgekit.speech import pipeline
from edgekit.speech.corpus import DIGITS
from edgekit.speech.exits import EarlyExit, Policy, Replay, stored_policy


def replay(graph, x, texts) -> Replay:
    runner = EarlyExit(graph)
    return Replay.of(runner.exits, runner.all_exits(x), texts)


def latency_ms(graph, x, repeats: int = 20) -> list[float]:
    """Median batch-1 milliseconds of ``transcribe`` stopping at each exit."""
    runner = EarlyExit(graph)
    out = []
    for k in range(len(runner.exits)):
        policy = Policy("exit", k + 1)
        runner.transcribe(x[0], policy)  # warm
        times = []
        for i in range(repeats):
            t = time.perf_counter()
            runner.transcribe(x[i % len(x)], policy)
            times.append(time.perf_counter() - t)
        out.append(1e3 * float(np.median(times)))
    return out


def board_run(graph, x, policies: list[str]) -> list[dict]:
    """The int8 model on mcu:qemu, one image per policy that decides on the board itself:
    whether its exit and text equal the host's staged run's, and its emulated instructions by
    the exit it stopped at."""
    from edgekit.speech.board import BoardExit

    host, out = EarlyExit(graph), []
    for text in policies or [str(stored_policy(graph))]:
        policy = Policy.parse(text, len(host.exits))
        board, same, by_exit = BoardExit(graph, "mcu:qemu"), 0, {}
        try:
            for xi in x:
                got, want = board.transcribe(xi, policy), host.transcribe(xi, policy)
                same += (got.exit, got.text) == (want.exit, want.text)
                by_exit.setdefault(got.exit, []).append(got.instructions)
        finally:
            board.close()
        rows = {k: {"utterances": len(v), "mean": float(np.mean(v)), "min": min(v),
                    "max": max(v)} for k, v in sorted(by_exit.items())}
        out.append({"policy": str(policy), "utterances": len(x), "same_exit_and_text": same,
                    "instructions_by_exit": rows})
        print(f"\nint8 on mcu:qemu, {policy} decided on the board: exit and text equal to the "
              f"host's on {same} of {len(x)} utterances; emulated instructions by exit")
        print(table(["exit", "utterances", "mean M", "min M", "max M"],
                    [(k, r["utterances"], r["mean"] / 1e6, r["min"] / 1e6, r["max"] / 1e6)
                     for k, r in rows.items()]))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="float early-exit model (.ekm)")
    p.add_argument("--int8", help="its int8 model (.ekm)")
    p.add_argument("--baseline", help="the single-exit model of the same depth (.ekm)")
    p.add_argument("--board", type=int, nargs="?", const=100, default=0, metavar="N",
                   help="N clean utterances on mcu:qemu, the board deciding (default 100)")
    p.add_argument("--board-policy", action="append", default=[], help="policy for --board "
                   "(repeatable; default the int8 model's stored one)")
    p.add_argument("--count", type=int, default=300, help="held-out utterances")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", help="write the policy curves (.png)")
    p.add_argument("--json", help="write every number (.json)")
    args = p.parse_args()
    graphs = {"float": edgekit.load(args.model)}
    if args.int8:
        graphs["int8"] = edgekit.load(args.int8)
    sets = {"clean": pipeline.split_features("held-out", args.count, args.seed),
            "10 dB white": pipeline.split_features("held-out", args.count, args.seed, 10.0),
            "10 dB babble": pipeline.split_features("held-out", args.count, args.seed, 10.0,
                                                    "babble")}
    results: dict = {"count": args.count, "per_exit": {}, "policies": {}, "curves": {}}
    replays = {(g, s): replay(graph, *sets[s]) for g, graph in graphs.items() for s in sets}
    runner = EarlyExit(graphs["float"])
    rows = [[k + 1, ex.blocks, ex.macs, *(100 * r.per_exit()[k]["wer"] for r in replays.values())]
            for k, ex in enumerate(runner.exits)]
    results["per_exit"] = {f"{g} {s}": r.per_exit() for (g, s), r in replays.items()}
    print(f"WER (%) per exit on {args.count} held-out-voice utterances")
    print(table(["exit", "blocks", "MACs", *(f"{g} {s}" for g, s in replays)], rows))
    is_digits = np.array([t.split()[0] in DIGITS for t in sets["clean"][1]])
    digits = {key: r.subset(is_digits) for key, r in replays.items()}
    results["per_exit_digits"] = {f"{g} {s}": r.per_exit() for (g, s), r in digits.items()}
    print(f"\nWER (%) per exit on its {int(is_digits.sum())} digit sequences")
    print(table(["exit", *(f"{g} {s}" for g, s in digits)],
                [[k + 1, *(100 * r.per_exit()[k]["wer"] for r in digits.values())]
                 for k in range(len(runner.exits))]))

    for g, graph in graphs.items():
        clean = replays[(g, "clean")]
        last = clean.per_exit()[-1]
        stored = stored_policy(graph)
        rows = []
        for s in sets:
            rep = replays[(g, s)].report(replays[(g, s)].choose(stored))
            rows.append([s, str(stored), 100 * rep["wer"], rep["mean_blocks"],
                         rep["mean_blocks"] / runner.exits[-1].blocks, rep["mean_macs"]])
            results["policies"][f"{g} {s}"] = {"policy": str(stored), **rep}
        print(f"\n{g}: the calibrated policy (goal: <= 1 point above the last exit's "
              f"{100 * last['wer']:.2f} % on clean, <= 60 % of the encoder)")
        print(table(["set", "policy", "WER %", "mean blocks", "share", "mean MACs"], rows))
        for kind in ("entropy", "posterior"):
            curve = clean.curve(kind, 25)
            results["curves"][f"{g} {kind}"] = curve
            if g == "float":
                print(f"\n{g} {kind} policy on clean held-out voices")
                print(table(["policy", "WER %", "mean blocks"],
                            [[c["policy"], 100 * c["wer"], c["mean_blocks"]] for c in curve]))

    x, _ = sets["clean"]
    for g, graph in graphs.items():
        ms = latency_ms(graph, x)
        results[f"latency_ms {g}"] = ms
        print(f"\n{g} batch-1 latency per exit (ms, cpu): "
              + ", ".join(f"exit {k + 1}: {t:.2f}" for k, t in enumerate(ms)))

    if args.board and args.int8:
        results["board"] = board_run(graphs["int8"], x[:args.board], args.board_policy)

    if args.baseline:
        base = edgekit.load(args.baseline)
        wers = {s: replay(base, *sets[s]).per_exit()[-1]["wer"] for s in sets}
        results["single_exit_baseline"] = wers
        print("\nsingle-exit baseline (same depth and epochs), last-exit WER %: "
              + ", ".join(f"{s} {100 * w:.2f}" for s, w in wers.items()))

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for key, curve in results["curves"].items():
            ax.plot([c["mean_blocks"] for c in curve], [100 * c["wer"] for c in curve],
                    marker=".", label=key)
        per_exit = results["per_exit"]["float clean"]
        ax.plot([e["blocks"] for e in per_exit], [100 * e["wer"] for e in per_exit], "k--",
                marker="o", label="float fixed exit")
        ax.set_xlabel("mean encoder blocks executed")
        ax.set_ylabel("WER % (held-out voices, clean)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
    if args.json:
        atomic_write_bytes(args.json, json.dumps(results, indent=1).encode())


if __name__ == "__main__":
    main()
