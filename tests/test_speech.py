"""edgekit.speech: the synthesized corpus, the front-end, CTC decoding, exit policies, the
runtime that stops at an exit, and the ``edgekit asr`` commands on a small corpus."""

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import EdgekitError
from edgekit.speech import corpus, ctc, frontend
from edgekit.speech.exits import EarlyExit, Policy, Replay, exits_of

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None,
    reason="espeak-ng and sox are not installed (make test installs them as root on Debian)")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("speech-cache")


# ---- front-end ---------------------------------------------------------------------------

def test_wav_round_trip_and_refusals(tmp_path):
    audio = np.sin(np.linspace(0, 200, 8000)).astype(np.float32) * 0.5
    path = frontend.write_wav(tmp_path / "a.wav", audio)
    np.testing.assert_allclose(frontend.read_wav(path), audio, atol=1 / 32768)
    import wave

    with wave.open(str(tmp_path / "b.wav"), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes(b"\0" * 400)
    with pytest.raises(EdgekitError, match="16 kHz mono 16-bit"):
        frontend.read_wav(tmp_path / "b.wav")
    (tmp_path / "c.wav").write_bytes(b"not a wav")
    with pytest.raises(EdgekitError, match="not a readable WAV"):
        frontend.read_wav(tmp_path / "c.wav")


def test_features_shape_padding_and_limit():
    rng = np.random.default_rng(0)
    audio = rng.standard_normal(16000).astype(np.float32) * 0.1
    f = frontend.features(audio)
    assert f.shape == (frontend.MELS, frontend.FRAMES) and f.dtype == np.float32
    frames = 1 + (16000 - frontend.WINDOW) // frontend.HOP
    np.testing.assert_allclose(f[:, :frames].mean(1), 0, atol=1e-5)  # mean-normalized bands
    assert not f[:, frames:].any()  # padded with zeros
    np.testing.assert_array_equal(frontend.features(audio), f)
    with pytest.raises(EdgekitError, match="longer than"):
        frontend.features(np.zeros(frontend.MAX_SAMPLES + 1, np.float32))


# ---- CTC ---------------------------------------------------------------------------------

def test_greedy_merges_repeats_and_drops_blanks():
    path = [0, 8, 8, 0, 9, 0, 0, 9, 1, 1, 0]  # g g _ h _ _ h ' ' ' '
    lp = np.log(np.full((len(path), ctc.CLASSES), 1e-3))
    lp[np.arange(len(path)), path] = 0.0
    assert ctc.greedy(lp) == "ghh"
    np.testing.assert_array_equal(ctc.encode("go on"), [8, 16, 1, 16, 15])


def test_error_rates():
    assert ctc.wer(["three seven one", "yes"], ["three one", "yes"]) == pytest.approx(1 / 4)
    assert ctc.cer(["abc"], ["abd"]) == pytest.approx(1 / 3)
    assert ctc.edit_distance("kitten", "sitting") == 3


# ---- corpus ------------------------------------------------------------------------------

def test_voices_held_out_of_training():
    assert not set(corpus.HELD_OUT) & set(corpus.TRAIN)
    assert not set(corpus.VALID) & set(corpus.TRAIN) and not set(corpus.VALID) & set(
        corpus.HELD_OUT)
    # every accent and every variant is still heard in training
    assert {v.split("+")[0] for v in corpus.TRAIN} == set(corpus.ACCENTS)
    assert {v.split("+")[1] for v in corpus.TRAIN} == set(corpus.VARIANTS)
    assert corpus.script("held-out", 3)[1] in corpus.HELD_OUT


def test_without_espeak_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # fault injected: no tool on the PATH
    with pytest.raises(EdgekitError, match="apt-get install espeak-ng sox"):
        corpus.synthesize("one", "en-us+m1", 160, 50, cache=tmp_path)


def test_noise_at_the_snr_asked():
    rng = np.random.default_rng(1)
    audio = (0.1 * np.sin(np.arange(16000) / 5)).astype(np.float32)
    for babble in (None, [rng.standard_normal(5000) * 0.2 for _ in range(8)]):
        noisy = corpus.add_noise(audio, 10.0, np.random.default_rng(2), babble)
        noise = noisy.astype(np.float64) - audio
        snr = 10 * np.log10(np.mean(audio.astype(np.float64) ** 2) / np.mean(noise ** 2))
        assert snr == pytest.approx(10.0, abs=0.05)


@needs_espeak
def test_corpus_is_deterministic_and_cached(cache, tmp_path):
    a = corpus.utterances("held-out", 4, snr=10, noise="babble", cache=cache)
    b = corpus.utterances("held-out", 4, snr=10, noise="babble", cache=tmp_path)  # made anew
    assert [u.text for u in a] == [u.text for u in b]
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u.audio, v.audio)
        assert u.voice in corpus.HELD_OUT and len(u.audio) <= frontend.MAX_SAMPLES
    assert len(list(cache.glob("*.wav"))) >= 4


# ---- the runtime stops at the exit -------------------------------------------------------

@pytest.fixture(scope="module")
def graph():
    """An untrained 6-block, 3-exit encoder lowered to a Graph: what stopping computes does
    not depend on the weights."""
    import torch

    from edgekit.speech.model import EarlyExitCTC
    from edgekit.speech.pipeline import to_graph

    torch.manual_seed(0)
    return to_graph(EarlyExitCTC(blocks=6, channels=16), exit_every=2)


def test_staged_run_stops_at_the_exit_and_resumes(graph):
    from edgekit.runtime.executor import Executor

    x = np.random.default_rng(0).standard_normal((1, frontend.MELS, frontend.FRAMES))
    x = x.astype(np.float32)
    full = Executor(graph).run(x)
    run = Executor(graph).staged(x)
    called = []
    run.program.steps = [lambda i=i, step=step: (called.append(i), step())
                         for i, step in enumerate(run.program.steps)]  # counted, still run
    first = run.until(graph.outputs[0])
    index = [n.outputs[0] for n in graph.nodes].index(graph.outputs[0])
    assert called == list(range(index + 1))  # the steps up to exit 1, nothing past it
    np.testing.assert_array_equal(first, full[0])
    np.testing.assert_array_equal(run.until(graph.outputs[-1]), full[-1])
    np.testing.assert_array_equal(run.until(graph.outputs[1]), full[1])  # kept, not rerun
    assert called == list(range(len(graph.nodes)))  # each step once
    with pytest.raises(EdgekitError, match="not an output"):
        run.until(graph.nodes[0].outputs[0])


def test_exits_cost_what_their_prefix_computes(graph):
    exits = exits_of(graph)
    assert [e.blocks for e in exits] == [2, 4, 6]
    macs = [graph.node_macs(n) for n in graph.nodes]
    names = [n.outputs[0] for n in graph.nodes]
    assert [e.macs for e in exits] == [sum(macs[:names.index(e.output) + 1]) for e in exits]
    assert exits[0].macs < exits[1].macs < exits[2].macs
    meta = graph.metadata["early_exit"]
    for broken in ({"outputs": meta["outputs"][::-1]}, {"blocks": [2, "4", 6]},
                   {"outputs": [["x"], 1, 2]}, {"blocks": None}):
        graph.metadata["early_exit"] = {**meta, **broken}
        try:
            with pytest.raises(EdgekitError, match="does not match"):
                exits_of(graph)
        finally:
            graph.metadata["early_exit"] = meta


def test_each_exit_exports_as_a_complete_sub_model(graph, tmp_path, capsys):
    from edgekit.cli import main
    from edgekit.runtime.executor import Executor
    from edgekit.speech.export import exit_graph

    x = np.random.default_rng(1).standard_normal((1, frontend.MELS, frontend.FRAMES))
    x = x.astype(np.float32)
    full = Executor(graph).run(x)
    for k in (1, 3):
        sub = exit_graph(graph, k)
        assert sub.outputs == [graph.outputs[k - 1]]
        assert len(sub.nodes) < len(graph.nodes)  # not even the other exits' heads
        np.testing.assert_array_equal(Executor(sub).run(x), full[k - 1])
    graph.save(tmp_path / "asr.ekm")
    assert main(["asr", "export", str(tmp_path / "asr.ekm"), "-o", str(tmp_path / "out"),
                 "--to", "ekm,onnx"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"asr.exit{k}.{f}" for k in (1, 2, 3) for f in ("ekm", "onnx")]
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(tmp_path / "out" / "asr.exit2.onnx"))
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, full[1], atol=1e-4)
    assert main(["asr", "export", str(tmp_path / "asr.ekm"), "-o", str(tmp_path / "o2"),
                 "--to", "pdf"]) == 2
    assert "formats" in capsys.readouterr().err and not (tmp_path / "o2").exists()


def test_segments_chain_to_the_same_exits_on_other_targets(graph):
    """Cut at its exits, the Graph runs segment by segment on targets that cannot stop
    half-way, and stops at the same exits with the same text as the staged run."""
    from edgekit.runtime.executor import Executor
    from edgekit.speech.exits import SegmentedExit
    from edgekit.speech.export import segments

    x = np.random.default_rng(4).standard_normal((4, frontend.MELS, frontend.FRAMES))
    x = x.astype(np.float32)
    full = Executor(graph).run(x)
    segs = segments(graph)
    assert sum(len(s.nodes) for s in segs) == len(graph.nodes)  # nothing computed twice
    tensors = {graph.inputs[0]: x}
    for k, seg in enumerate(segs):
        outs = Executor(seg).run({name: tensors[name] for name in seg.inputs})
        tensors.update(zip(seg.outputs, outs if len(seg.outputs) > 1 else [outs]))
        np.testing.assert_array_equal(tensors[graph.outputs[k]], full[k])
    staged = EarlyExit(graph)
    first = np.sort(Replay.of(staged.exits, staged.all_exits(x), ["a"] * 4).scores["entropy"][:, 0])
    policy = Policy("entropy", float(first[1] + first[2]) / 2)  # half stop, far from a tie
    for target in ["cpu"] + (["cpu:onnxruntime"] if _has("onnxruntime") else []):
        runner = SegmentedExit(graph, target)
        try:
            for xi in x:
                got, want = runner.transcribe(xi, policy), staged.transcribe(xi, policy)
                assert (got.exit, got.blocks, got.macs) == (want.exit, want.blocks, want.macs)
                if target == "cpu":
                    assert got.text == want.text
        finally:
            runner.close()


@pytest.mark.slow
def test_the_board_evaluates_the_policy_and_stops_there(graph):
    """One firmware image holds the whole int8 model and decides after each exit's head in
    integers: over many inputs the board stops at the exit the host's staged run picks, with
    the same text, and the instructions it runs grow with the exit it stopped at."""
    from edgekit.firmware_bridge.board import qemu_missing
    from edgekit.firmware_bridge.build import toolchain_missing
    from edgekit.speech.board import BoardExit

    missing = toolchain_missing() or qemu_missing()
    if missing:
        pytest.skip(f"MCU target unavailable: {missing}")
    import edgekit

    x = np.random.default_rng(5).standard_normal((24, frontend.MELS, frontend.FRAMES))
    x = (x * np.random.default_rng(6).uniform(0.2, 3, (24, 1, 1))).astype(np.float32)
    g8 = edgekit.quantize(graph, x)
    staged = EarlyExit(g8)
    entropy = Replay.of(staged.exits, staged.all_exits(x), ["a"] * len(x)).scores["entropy"]
    policy = Policy("entropy", float(np.median(entropy[:, 0])))  # a tie at the median too
    board = BoardExit(g8, "mcu:qemu")
    try:
        counted: dict[int, list[int]] = {}
        for xi in x:
            got, want = board.transcribe(xi, policy), staged.transcribe(xi, policy)
            assert (got.exit, got.text, got.macs) == (want.exit, want.text, want.macs)
            counted.setdefault(got.exit, []).append(got.instructions)
    finally:
        board.close()
    assert len(counted) >= 2, counted  # the threshold splits the inputs between exits
    spans = [(min(c), max(c)) for _, c in sorted(counted.items())]
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))  # deeper exit, more instructions


def _c_logmel():
    """``firmware/ek_logmel.c`` compiled for this machine, called through ctypes: the board's
    front-end code on the host's float32."""
    import ctypes
    import subprocess

    from edgekit.firmware_bridge.build import FIRMWARE
    from edgekit.speech import logmel_c

    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler on this machine")
    lib_path = Path(tempfile.mkdtemp()) / "logmel.so"
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-ffp-contract=off", "-o", str(lib_path),
                    str(FIRMWARE / "ek_logmel.c"), "-lm"], check=True)
    lib = ctypes.CDLL(str(lib_path))
    tables = logmel_c.tables()
    ptr = ctypes.c_void_p

    class Params(ctypes.Structure):  # ek_logmel_t
        _fields_ = [(f, ctypes.c_uint16) for f in ("window", "hop", "mels", "frames")] + [
            (f, ptr) for f in tables] + [("floor", ctypes.c_float), ("scale", ctypes.c_float)]

    params = Params(frontend.WINDOW, frontend.HOP, frontend.MELS, frontend.FRAMES,
                    *[t.ctypes.data for t in tables.values()], 1e-6, 1 / frontend.SCALE)

    def features(audio):
        pcm = np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)
        out = np.zeros((frontend.MELS, frontend.FRAMES), np.float32)
        work = np.zeros(1024, np.float32)
        frames = lib.ek_logmel(ctypes.byref(params), pcm.ctypes.data_as(ptr),
                               ctypes.c_uint32(len(pcm)), out.ctypes.data_as(ptr),
                               work.ctypes.data_as(ptr))
        return out, frames, tables

    return features


def test_the_c_front_end_matches_numpy():
    """The board's log-mel front-end in float (ek_logmel.c) gives numpy's features within
    float32 rounding: short, long and silent-tailed clips, tones and noise."""
    c_features = _c_logmel()
    rng = np.random.default_rng(8)
    t = np.arange(frontend.MAX_SAMPLES) / frontend.SAMPLE_RATE
    for n in (200, 400, 4001, 16000, frontend.MAX_SAMPLES):
        audio = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 3000) * t[:n]) * np.exp(-t[:n])
        audio = (audio + rng.standard_normal(n) * 0.01 * rng.uniform(0, 1)).astype(np.float32)
        audio = np.round(audio * 32768) / 32768  # what a 16-bit WAV holds
        got, frames, _ = c_features(audio)
        want = frontend.features(audio)
        assert frames == max(1, 1 + (n - frontend.WINDOW) // frontend.HOP)
        np.testing.assert_allclose(got, want, atol=2e-4)
        assert not got[:, frames:].any()


@pytest.mark.slow
def test_the_board_computes_the_front_end_itself(graph):
    """On a core with an FPU the host sends audio and the board computes the log-mels, quantizes
    them and runs the model: the exit's log-posteriors are the host's on numpy's features up to
    the few int8 inputs that float32 rounding moves across a rounding boundary."""
    from edgekit.firmware_bridge.board import qemu_missing
    from edgekit.firmware_bridge.build import toolchain_missing
    from edgekit.speech.board import BoardExit

    missing = toolchain_missing() or qemu_missing()
    if missing:
        pytest.skip(f"MCU target unavailable: {missing}")
    import edgekit

    rng = np.random.default_rng(9)
    clips = [(0.2 * np.sin(np.arange(n) * rng.uniform(0.05, 0.5)) + 0.02 * rng.standard_normal(n))
             .astype(np.float32) for n in (6000, frontend.MAX_SAMPLES)]
    clips = [np.round(a * 32768) / 32768 for a in clips]
    x = np.stack([frontend.features(a) for a in clips])
    g8 = edgekit.quantize(graph, x)
    host, board = EarlyExit(g8), BoardExit(g8, "mcu:qemu:m4", frontend=True)
    try:
        for audio, xi in zip(clips, x):
            got = board.transcribe_audio(audio, Policy("exit", 2))
            run = host.executor.staged(xi[None])
            want = run.until(g8.outputs[1])[0]
            assert got.exit == 2 and got.instructions > 0
            diff = np.abs(board.last_log_probs - want)
            assert diff.max() <= 0.25 and diff.mean() <= 0.01, (diff.max(), diff.mean())
    finally:
        board.close()


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_policies_parse_and_refuse():
    assert Policy.parse("exit:2", 6) == Policy("exit", 2)
    assert str(Policy.parse("entropy:0.25", 6)) == "entropy:0.25"
    for bad in ("exit:7", "exit:1.5", "posterior:2", "entropy:x", "depth:3", "entropy"):
        with pytest.raises(EdgekitError, match="policy"):
            Policy.parse(bad, 6)


def test_transcribe_agrees_with_the_replayed_policy(graph):
    """The policy decided on the staged run equals the one replayed on every exit's outputs
    (what evaluation and calibration use), for every policy kind."""
    runner = EarlyExit(graph)
    x = np.random.default_rng(3).standard_normal((6, frontend.MELS, frontend.FRAMES))
    x = x.astype(np.float32)
    outs = runner.all_exits(x)
    replay = Replay.of(runner.exits, outs, ["one"] * len(x))
    mid_entropy = float(np.median(replay.scores["entropy"][:, 0]))
    mid_posterior = float(np.median(replay.scores["posterior"][:, 1]))
    for policy in (Policy("exit", 2), Policy("entropy", mid_entropy),
                   Policy("posterior", mid_posterior)):
        chosen = replay.choose(policy)
        for i in range(len(x)):
            r = runner.transcribe(x[i], policy)
            assert r.exit == chosen[i] + 1
            assert r.text == replay.hyps[chosen[i]][i]
            assert (r.blocks, r.macs) == (runner.exits[chosen[i]].blocks,
                                          runner.exits[chosen[i]].macs)


# ---- the commands, on a small corpus -----------------------------------------------------

@needs_espeak
def test_asr_train_transcribe_eval(tmp_path, cache, capsys):
    from edgekit.cli import main

    model = tmp_path / "asr.ekm"
    assert main(["asr", "train", "-o", str(model), "--blocks", "4", "--channels", "24",
                 "--utterances", "60", "--valid", "20", "--epochs", "2", "--quantize", "int8",
                 "--cache", str(cache)]) == 0
    capsys.readouterr()
    int8 = tmp_path / "asr.int8.ekm"
    import edgekit

    g8 = edgekit.load(int8)
    assert all(g8.tensors[o].dtype == "int8" for o in g8.outputs)  # every exit int8
    wavs = [str(frontend.write_wav(tmp_path / f"{i}.wav", u.audio)) for i, u in
            enumerate(corpus.utterances("held-out", 2, cache=cache))]
    for path in (model, int8):
        assert main(["asr", "transcribe", str(path), *wavs, "--policy", "exit:1",
                     "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert [r["file"] for r in out] == wavs
        first = exits_of(edgekit.load(path))[0]
        assert all((r["exit"], r["blocks"], r["macs"]) == (1, 2, first.macs) for r in out)
        assert all(isinstance(r["text"], str) for r in out)
    assert main(["asr", "eval", str(model), "--voices", "held-out", "--count", "10",
                 "--snr", "10", "--cache", str(cache), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [e["exit"] for e in report["exits"]] == [1, 2]
    assert report["policy"]["policy"] == edgekit.load(model).metadata["early_exit"]["policy"]
    assert all(0 <= e["cer"] and 0 <= e["wer"] for e in report["exits"])
    digits = report["digit_sequences"]
    assert 0 < digits["utterances"] <= 10 and len(digits["exits"]) == 2
    assert main(["asr", "eval", str(model), "--count", "10", "--policy", "exit:2", "--cache",
                 str(cache)]) == 0
    assert "exit:2" in capsys.readouterr().out
    assert main(["asr", "calibrate", str(model), "-o", str(tmp_path / "fixed.ekm"), "--goal",
                 "blocks:0.5", "--valid", "20", "--cache", str(cache)]) == 0
    meta = edgekit.load(tmp_path / "fixed.ekm").metadata["early_exit"]
    assert meta["calibration"]["goal"] == "blocks:0.5"
    assert meta["calibration"]["valid"]["mean_blocks"] <= 2  # half the 4 blocks at most


@needs_espeak
def test_the_demo_speech_stage(tmp_path, cache, capsys):
    """``edgekit demo --asr``'s stage, at a toy size: the models written, WER per exit and for
    the policy, transcriptions that stop at the policy's exit."""
    from edgekit.speech.demo import run
    from edgekit.speech.model import TrainConfig

    cfg = TrainConfig(blocks=2, channels=8, train_utterances=20, valid_utterances=10,
                      epochs=1, batch=16)
    report = run(tmp_path, cfg, held_out=4, board=0, cache=cache)
    assert (tmp_path / "asr.ekm").exists() and (tmp_path / "asr.int8.ekm").exists()
    assert [e["exit"] for e in report["int8"]["exits"]] == [1]
    assert len(report["transcribed"]) == 3 and "WER" in capsys.readouterr().out


@pytest.mark.parametrize("argv, words", [
    (["asr", "transcribe", "missing.ekm", "a.wav"], ["no such file"]),
    (["asr", "train", "-o", "m.ekm", "--blocks", "3"], ["--blocks"]),
    (["asr", "eval", "m.ekm", "--count", "0"], ["--count"]),
    (["asr", "transcribe", "m.ekm", "a.wav", "--frontend", "board"], ["--target mcu"]),
])
def test_asr_user_errors_are_one_line(capsys, argv, words):
    from edgekit.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(w in err for w in words), err


def test_transcribe_refuses_a_model_without_exits(tmp_path, capsys, graph):
    from edgekit.cli import main

    plain = graph.__class__(graph.inputs, graph.outputs, graph.tensors, graph.nodes,
                            graph.params, {})
    plain.save(tmp_path / "plain.ekm")
    wav = frontend.write_wav(tmp_path / "a.wav", np.zeros(8000))
    assert main(["asr", "transcribe", str(tmp_path / "plain.ekm"), str(wav)]) == 2
    assert "not an early-exit speech model" in capsys.readouterr().err
    assert main(["profile", str(tmp_path / "plain.ekm"), "--policy", "exit:1"]) == 2
    assert "apply to early-exit models" in capsys.readouterr().err


# ---- profile: cost per exit and a policy's expected cost ---------------------------------

def test_profile_per_exit_macs_are_the_steps_a_staged_run_executes(graph):
    """Each exit's MACs in the profile are the MACs of the steps a staged run actually calls
    before it returns that exit; a policy's expected cost is its exits' costs weighted by how
    often it stops at each, as the staged transcriptions themselves count it."""
    import edgekit
    from edgekit.runtime.executor import Executor

    x = np.random.default_rng(6).standard_normal((8, frontend.MELS, frontend.FRAMES))
    x = x.astype(np.float32)
    runner = EarlyExit(graph)
    mid = float(np.median(Replay.of(runner.exits, runner.all_exits(x), ["a"] * 8)
                          .scores["entropy"][:, 0]))
    policy = f"entropy:{mid!r}"
    report = edgekit.profile(graph, "cpu", x[:1], runs=2, warmup=0, per_layer=False,
                             exit_inputs=x, exit_policy=policy)
    rows = report["early_exit"]["exits"]
    macs = []
    for k, row in enumerate(rows):
        run, called = Executor(graph).staged(x[:1]), []
        run.program.steps = [lambda i=i, step=step, seen=called: (seen.append(i), step())
                             for i, step in enumerate(run.program.steps)]
        run.until(graph.outputs[k])
        assert row["macs"] == sum(graph.node_macs(graph.nodes[i]) for i in called)
        assert row["steps"] == len(called) and row["latency_ms"]["p50"] > 0
        macs.append(row["macs"])
    assert macs == sorted(set(macs))  # each exit costs more than the one before
    p = report["early_exit"]["policy"]
    done = [runner.transcribe(xi, Policy.parse(policy, 3)) for xi in x]
    assert p["mean_macs"] == pytest.approx(np.mean([r.macs for r in done]))
    assert p["mean_blocks"] == pytest.approx(np.mean([r.blocks for r in done]))
    assert 0 < p["exit_share"][0] < 1  # the threshold splits the inputs
    from edgekit.profile.report import validate

    validate(report.data)
    assert "early exits" in report.text()


def test_the_boards_integer_policy_decides_as_the_host_on_int8_log_posteriors():
    """``fixed_point``'s table sums decide exactly as the host's float scores on the same int8
    log-posteriors, thresholds set at utterances' own scores (exact ties) included."""
    from edgekit.graph import QuantParams
    from edgekit.quant.edge import dequantizer
    from edgekit.speech.exits import fixed_point, scores

    rng = np.random.default_rng(7)
    frames, classes = 64, ctc.CLASSES
    logits = rng.standard_normal((400, frames, classes)) * rng.uniform(0.5, 6, (400, 1, 1))
    lp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    q = np.clip(np.round(lp * 16) + 127, -128, 127).astype(np.int8)  # int8 log_softmax
    dq = dequantizer(QuantParams([1 / 16], [127]))
    values, lp8 = dq(np.arange(-128, 128).astype(np.int8)), dq(q)
    for kind in ("entropy", "posterior"):
        s = scores(kind, lp8)
        for value in [*np.quantile(s, [0.1, 0.5, 0.9]), *s[:20]]:
            policy = Policy(kind, float(value))
            table, threshold = fixed_point(policy, values, frames, classes)
            idx = q.astype(np.int64) + 128
            if kind == "entropy":
                board = table[idx].sum((1, 2)) <= threshold
            else:
                board = table[idx.max(-1)].sum(-1) >= threshold
            host = np.array([policy.stops(0, float(v)) for v in s])
            np.testing.assert_array_equal(board, host)
            assert 0 < host.sum() < len(host) or value in s[:20]


def test_conformer_blocks_lower_with_their_exits():
    """The small conformer encoder lowers to one Graph (attention written out per head): the
    runtime gives torch's exits, int8 covers every exit, and the firmware has every op."""
    import torch

    import edgekit
    from edgekit.converters.to_c import check_supported
    from edgekit.runtime.executor import Executor
    from edgekit.speech.model import EarlyExitCTC
    from edgekit.speech.pipeline import to_graph

    torch.manual_seed(1)
    model = EarlyExitCTC(blocks=4, channels=16, block="conformer").eval()
    graph = to_graph(model, exit_every=2)
    assert {"softmax", "matmul", "layernorm"} <= {n.op for n in graph.nodes}
    x = np.random.default_rng(10).standard_normal((2, frontend.MELS, frontend.FRAMES))
    x = x.astype(np.float32)
    with torch.no_grad():
        want = [o.numpy() for o in model(torch.from_numpy(x))]
    got = Executor(graph).run(x)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-4)
    g8 = edgekit.quantize(graph, x)
    assert all(g8.tensors[o].dtype == "int8" for o in g8.outputs)
    check_supported(g8)
    assert [e.blocks for e in exits_of(g8)] == [2, 4]
