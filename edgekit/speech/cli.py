"""``edgekit asr``: train, transcribe and evaluate early-exit speech models.

``edgekit.cli`` registers the command with ``add_parser``; the work happens in
``edgekit.speech.pipeline`` and ``edgekit.speech.exits``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.speech.exits import GOAL

POLICY_HELP = "entropy:T, posterior:P or exit:K (default: the policy calibrated at training)"


def add_parser(sub) -> None:
    asr = sub.add_parser("asr", help="early-exit speech recognition: train, transcribe, eval")
    actions = asr.add_subparsers(dest="asr_action", required=True)

    t = actions.add_parser("train", help="make the corpus, train from scratch, calibrate")
    t.add_argument("-o", "--output", required=True, help="the float model (.ekm)")
    t.add_argument("--blocks", type=int, default=12, help="encoder blocks (an exit every 2)")
    t.add_argument("--minutes", type=float, help="training time budget (default: the epochs)")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--utterances", type=int, default=2000, help="training utterances")
    t.add_argument("--valid", type=int, default=300, help="validation utterances (calibration)")
    t.add_argument("--channels", type=int, default=64, help="encoder width")
    t.add_argument("--block", choices=["dsconv", "conformer"], default="dsconv",
                   help="encoder block: depthwise-separable convolution or a small conformer")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--single-exit", action="store_true", help="train only the last exit (the "
                   "baseline an early-exit model is compared with)")
    t.add_argument("--quantize", choices=["int8"], help="also write <output>.int8.ekm")
    t.add_argument("--goal", default=GOAL, help="calibration goal on the validation "
                   "voices: wer:D (at most D above the last exit) or blocks:F (mean share)")
    t.add_argument("--cache", help="corpus cache folder (default $EDGEKIT_CACHE/speech)")
    t.set_defaults(func=cmd_train)

    r = actions.add_parser("transcribe", help="WAV files (16 kHz mono) to text")
    r.add_argument("model")
    r.add_argument("wavs", nargs="+", metavar="wav")
    r.add_argument("--policy", help=POLICY_HELP)
    r.add_argument("--target", default="cpu", help="where it runs (cpu: the edgekit runtime; "
                   "mcu:*: one image that evaluates the policy itself; other targets run the "
                   "Graph cut at its exits, segment by segment)")
    r.add_argument("--frontend", choices=["host", "board"], default="host", help="where the "
                   "log-mels are computed (board: on an mcu target, in float; best on a core "
                   "with an FPU, mcu:qemu:m4)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_transcribe)

    e = actions.add_parser("eval", help="WER, CER and compute per exit and for a policy")
    e.add_argument("model")
    e.add_argument("--voices", default="held-out", choices=["held-out", "valid", "train"])
    e.add_argument("--snr", type=float, help="add noise at this SNR (dB)")
    e.add_argument("--noise", default="white", choices=["white", "babble"])
    e.add_argument("--count", type=int, default=300, help="utterances")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--policy", help=POLICY_HELP)
    e.add_argument("--cache", help="corpus cache folder (default $EDGEKIT_CACHE/speech)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_eval)

    c = actions.add_parser("calibrate", help="choose the stored policy anew for a goal")
    c.add_argument("model")
    c.add_argument("-o", "--output", required=True, help="the model with the new policy")
    c.add_argument("--goal", default=GOAL, help="wer:D or blocks:F (as for train)")
    c.add_argument("--valid", type=int, default=300, help="validation utterances")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--cache", help="corpus cache folder (default $EDGEKIT_CACHE/speech)")
    c.set_defaults(func=cmd_calibrate)

    x = actions.add_parser("export", help="each exit as a complete sub-model (ONNX, TFLite)")
    x.add_argument("model")
    x.add_argument("-o", "--out", required=True, help="folder for <name>.exit<k>.<format>")
    x.add_argument("--to", default="onnx,tflite", help="formats: ekm, onnx, tflite")
    x.set_defaults(func=cmd_export)


def cmd_train(args: argparse.Namespace) -> None:
    from edgekit.fileio import check_file
    from edgekit.speech import corpus, pipeline
    from edgekit.speech.model import TrainConfig

    out = Path(args.output)
    int8_out = out.with_suffix(".int8.ekm")
    check_file(out)
    if args.quantize:
        check_file(int8_out)
    if args.blocks < 2 or args.blocks % 2 or args.blocks > 64:
        raise EdgekitError(f"--blocks must be an even number from 2 to 64, got {args.blocks}")
    if args.minutes is not None and not 0 < args.minutes <= 24 * 60:
        raise EdgekitError(f"--minutes must be above 0 (and at most a day), got {args.minutes}")
    if (args.epochs < 1 or not 10 <= args.utterances <= 1_000_000
            or not 10 <= args.valid <= 100_000 or not 4 <= args.channels <= 1024):
        raise EdgekitError("--epochs must be at least 1, --utterances and --valid at least 10, "
                           "--channels from 4 to 1024")
    corpus.require_tools()
    cfg = TrainConfig(blocks=args.blocks, channels=args.channels, epochs=args.epochs,
                      minutes=args.minutes, train_utterances=args.utterances,
                      valid_utterances=args.valid, seed=args.seed,
                      single_exit=args.single_exit, block=args.block)
    start = time.monotonic()
    graph = pipeline.build(cfg, args.goal, args.cache)
    graph.save(out)
    print(f"wrote {out} ({time.monotonic() - start:.0f} s)")
    if args.quantize:
        q = pipeline.quantize(graph, args.seed, args.goal, args.cache, args.valid,
                              min(pipeline.CALIBRATION_SAMPLES, args.utterances))
        q.save(int8_out)
        print(f"wrote {int8_out}")


def cmd_transcribe(args: argparse.Namespace) -> None:
    from edgekit.cli import load_model
    from edgekit.speech import frontend
    from edgekit.speech.board import BoardExit
    from edgekit.speech.exits import EarlyExit, Policy, SegmentedExit, stored_policy

    on_board = args.frontend == "board"
    if on_board and not args.target.startswith("mcu:"):
        raise EdgekitError("--frontend board runs the log-mels on a microcontroller: use it "
                           "with --target mcu:qemu[:core]")
    graph = load_model(args.model)
    clips = []
    for wav in args.wavs:  # every file read before anything is deployed
        try:
            audio = frontend.read_wav(wav)
            clips.append((audio, frontend.features(audio)))
        except EdgekitError as err:
            raise EdgekitError(str(err) if str(err).startswith(wav) else f"{wav}: {err}") from None
    # the edgekit runtime stops inside the one Graph; a board runs the whole model and decides
    # itself (one image); any other target runs it in segments, the host deciding between them
    runner = (EarlyExit(graph) if args.target == "cpu" else
              BoardExit(graph, args.target, frontend=on_board)
              if args.target.startswith("mcu:") else SegmentedExit(graph, args.target))
    policy = (stored_policy(graph) if args.policy is None
              else Policy.parse(args.policy, len(runner.exits)))
    results = []
    try:
        for wav, (audio, x) in zip(args.wavs, clips):
            r = runner.transcribe_audio(audio, policy) if on_board else runner.transcribe(x, policy)
            results.append({"file": wav, "text": r.text, "exit": r.exit, "blocks": r.blocks,
                            "macs": r.macs} | ({} if r.instructions is None
                                               else {"instructions": r.instructions}))
    finally:
        runner.close()
    if args.json:
        print(json.dumps(results, indent=1))
        return
    for r in results:
        print(f"{r['file']}: {r['text']!r} (exit {r['exit']}, {r['blocks']} blocks, "
              f"{r['macs']:,} MACs)")


def cmd_eval(args: argparse.Namespace) -> None:
    from edgekit.cli import load_model
    from edgekit.console import table
    from edgekit.speech import pipeline

    if not 1 <= args.count <= 100_000:
        raise EdgekitError(f"--count must be from 1 to 100000, got {args.count}")
    graph = load_model(args.model)
    report = pipeline.evaluate(graph, args.voices, args.count, args.seed, args.snr,
                               args.noise, args.policy, args.cache)
    if args.json:
        print(json.dumps(report, indent=1))
        return
    digits = report["digit_sequences"] or {"exits": [{"wer": None}] * len(report["exits"]),
                                           "policy": {"wer": None}}
    rows = [(f"exit {r['exit']}", r["blocks"], r["macs"], r["wer"], r["cer"], d["wer"])
            for r, d in zip(report["exits"], digits["exits"])]
    p = report["policy"]
    rows.append((p["policy"], p["mean_blocks"], p["mean_macs"], p["wer"], p["cer"],
                 digits["policy"]["wer"]))
    noise = "clean" if args.snr is None else f"{args.noise} noise at {args.snr:g} dB"
    print(f"{args.count} utterances, {args.voices} voices, {noise}")
    print(table(["exit / policy", "blocks", "MACs", "WER", "CER", "WER digits"], rows))


def cmd_calibrate(args: argparse.Namespace) -> None:
    from edgekit.cli import load_model
    from edgekit.fileio import check_file
    from edgekit.speech import pipeline
    from edgekit.speech.exits import META

    check_file(args.output)
    if not 10 <= args.valid <= 100_000:
        raise EdgekitError(f"--valid must be from 10 to 100000, got {args.valid}")
    graph = load_model(args.model)
    x, texts = pipeline.split_features("valid", args.valid, args.seed, cache=args.cache)
    pipeline.calibrate_graph(graph, x, texts, args.goal)
    graph.save(args.output)
    meta = graph.metadata[META]
    print(f"policy {meta['policy']} on the validation voices: {meta['calibration']['valid']}; "
          f"wrote {args.output}")


def cmd_export(args: argparse.Namespace) -> None:
    from edgekit.cli import load_model
    from edgekit.fileio import check_folder
    from edgekit.speech.export import export

    graph = load_model(args.model)
    check_folder(args.out, create=True)
    paths = export(graph, args.out, tuple(f.strip() for f in args.to.split(",")),
                   Path(args.model).stem.split(".")[0])
    print("\n".join(f"wrote {p}" for p in paths))


PROFILE_UTTERANCES = 300


def exit_options(args: argparse.Namespace, graph, data) -> dict:
    """``edgekit profile``'s early-exit options: the policy (``--policy``) and the inputs its
    expected compute is taken over (``--voices``' features, or the ``--labels`` inputs)."""
    from edgekit.profile.exits import is_early_exit

    if not is_early_exit(graph):
        if args.policy or args.voices:
            raise EdgekitError("--policy and --voices apply to early-exit models (made by "
                               "`edgekit asr train`)")
        return {}
    if args.voices and data:
        raise EdgekitError("give --voices or --labels, not both")
    inputs = data[0] if data else None
    if args.voices:
        from edgekit.speech import corpus, pipeline

        corpus.require_tools()
        inputs, _ = pipeline.split_features(args.voices, PROFILE_UTTERANCES)
    return {"exit_inputs": inputs, "exit_policy": args.policy}
