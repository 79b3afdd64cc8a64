"""edgekit.speech: the synthesized corpus, the front-end, CTC decoding."""

import shutil

import numpy as np
import pytest

from edgekit.errors import EdgekitError
from edgekit.speech import corpus, ctc, frontend

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
