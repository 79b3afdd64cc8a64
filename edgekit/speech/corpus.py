"""A spoken-digit and command-word corpus synthesized with espeak-ng and sox, offline.

No speech dataset ships in an installable package, so the corpus is made: espeak-ng speaks each
text in one voice (an English accent with a voice variant, e.g. ``en-gb-scotland+m1``) at a
speed and pitch, and sox resamples it to 16 kHz mono 16-bit. espeak-ng is deterministic, so a
random split of its clips would score near 100 %: the splits are by *voice* instead, and the
held-out test voices (one per accent, each with a variant no other split pairs with it) are never
heard in training or validation. Noise (white, or babble made of training-voice clips) is added
in numpy at a chosen SNR from a seeded generator, so every corpus is reproducible.

Clips are cached on disk as WAV files (``$EDGEKIT_CACHE/speech`` or ``~/.cache/edgekit/speech``,
or the ``cache`` argument), keyed by voice, speed, pitch and text; utterance ``i`` of a split is
the same whatever the count asked for.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.speech.frontend import SAMPLE_RATE, read_wav

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-rp",
           "en-gb-x-gbclan", "en-gb-x-gbcwmd")
VARIANTS = ("m1", "m3", "m5", "m7", "f2", "f3", "f4", "f5")
SPEEDS = (135, 160, 185)  # espeak-ng -s, words per minute
PITCHES = (30, 50, 70)  # espeak-ng -p, 0..99
# Each accent with one variant per evaluation split (a Latin square: accent i takes variant
# i + 2 for held-out, i + 5 for validation), so every accent and every variant is heard in
# training, but never in the combinations the model is evaluated on.
HELD_OUT = tuple(f"{a}+{VARIANTS[(i + 2) % 8]}" for i, a in enumerate(ACCENTS))
VALID = tuple(f"{a}+{VARIANTS[(i + 5) % 8]}" for i, a in enumerate(ACCENTS))
TRAIN = tuple(f"{a}+{v}" for a in ACCENTS for v in VARIANTS
              if f"{a}+{v}" not in HELD_OUT + VALID)
SPLITS = {"train": TRAIN, "valid": VALID, "held-out": HELD_OUT}
NOISES = ("white", "babble")
MAX_DIGITS = 4  # words in a digit sequence
BABBLE_TALKERS = 5
INSTALL = ("edgekit.speech makes its corpus with espeak-ng and sox: install them "
           "(Debian/Ubuntu: apt-get install espeak-ng sox; macOS: brew install espeak-ng sox)")


@dataclass(frozen=True)
class Utterance:
    """One clip: what is said, who says it how, and the 16 kHz mono samples in [-1, 1]."""

    text: str
    voice: str
    speed: int
    pitch: int
    audio: np.ndarray


def cache_dir(cache: str | Path | None = None) -> Path:
    """Where clips are kept: ``cache``, else ``$EDGEKIT_CACHE/speech``, else
    ``~/.cache/edgekit/speech``."""
    if cache is not None:
        return Path(cache)
    return Path(os.environ.get("EDGEKIT_CACHE") or Path.home() / ".cache" / "edgekit") / "speech"


def require_tools() -> None:
    """Raise the one install message unless espeak-ng and sox are on the PATH."""
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        raise EdgekitError(f"{' and '.join(missing)} not found. {INSTALL}")


def script(split: str, index: int, seed: int = 0) -> tuple[str, str, int, int]:
    """(text, voice, speed, pitch) of utterance ``index`` of ``split``: three quarters are
    digit sequences of 1 to ``MAX_DIGITS`` words, the rest command words."""
    voices = _voices(split)
    rng = np.random.default_rng([seed, list(SPLITS).index(split), index])
    if rng.random() < 0.75:
        text = " ".join(DIGITS[d] for d in rng.integers(0, 10, rng.integers(1, MAX_DIGITS + 1)))
    else:
        text = COMMANDS[rng.integers(len(COMMANDS))]
    return (text, voices[rng.integers(len(voices))], int(rng.choice(SPEEDS)),
            int(rng.choice(PITCHES)))


def utterances(split: str, count: int, seed: int = 0, snr: float | None = None,
               noise: str = "white", cache: str | Path | None = None) -> list[Utterance]:
    """The first ``count`` utterances of ``split`` ("train", "valid" or "held-out"), clean or
    with ``noise`` at ``snr`` dB (signal power over the whole clip)."""
    if noise not in NOISES:
        raise EdgekitError(f"noise must be one of {', '.join(NOISES)}, got {noise!r}")
    if type(count) is not int or count < 1:
        raise EdgekitError(f"count must be a positive int, got {count!r}")
    clips = [synthesize(*script(split, i, seed), cache=cache) for i in range(count)]
    if snr is None:
        return clips
    pool = babble_pool(seed, cache) if noise == "babble" else None
    return [Utterance(u.text, u.voice, u.speed, u.pitch,
                      add_noise(u.audio, snr, np.random.default_rng([seed, 7, i]), pool))
            for i, u in enumerate(clips)]


def synthesize(text: str, voice: str, speed: int, pitch: int,
               cache: str | Path | None = None) -> Utterance:
    """One clip, from the cache or made with espeak-ng | sox (and cached)."""
    folder = cache_dir(cache)
    path = folder / f"{voice}_{speed}_{pitch}_{text.replace(' ', '-')}.wav"
    if not path.exists():
        require_tools()
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".clip.", suffix=".wav", dir=folder)
        os.close(fd)
        try:
            speak = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch),
                                    "--stdout", text], capture_output=True, check=True)
            # -D: no dither, which would add random noise to every clip
            subprocess.run(["sox", "-D", "-t", "wav", "-", "-r", str(SAMPLE_RATE), "-c", "1",
                            "-b", "16", "-e", "signed-integer", tmp],
                           input=speak.stdout, capture_output=True, check=True)
            os.replace(tmp, path)
        except subprocess.CalledProcessError as err:
            raise EdgekitError(f"{err.cmd[0]} failed on {text!r} in voice {voice}: "
                               f"{err.stderr.decode(errors='replace').strip()[:200]}") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return Utterance(text, voice, speed, pitch, read_wav(path))


def babble_pool(seed: int = 0, cache: str | Path | None = None) -> list[np.ndarray]:
    """Training-voice clips that babble noise is mixed from (never a held-out voice)."""
    return [synthesize(*script("train", 100_000 + i, seed), cache=cache).audio
            for i in range(4 * BABBLE_TALKERS)]


def add_noise(audio: np.ndarray, snr: float, rng: np.random.Generator,
              babble: list[np.ndarray] | None = None) -> np.ndarray:
    """``audio`` plus noise scaled to ``snr`` dB: white Gaussian, or (``babble`` given) the sum
    of ``BABBLE_TALKERS`` clips drawn from it, each looped from a random offset."""
    if babble is None:
        noise = rng.standard_normal(len(audio))
    else:
        noise = np.zeros(len(audio))
        for k in rng.choice(len(babble), BABBLE_TALKERS, replace=False):
            clip = babble[k]
            noise += np.resize(np.roll(clip, -int(rng.integers(len(clip)))), len(audio))
    power = np.mean(np.square(audio, dtype=np.float64))
    scale = np.sqrt(power / 10 ** (snr / 10) / max(np.mean(noise ** 2), 1e-20))
    return np.clip(audio + scale * noise, -1.0, 1.0).astype(np.float32)


def _voices(split: str) -> tuple[str, ...]:
    if split not in SPLITS:
        raise EdgekitError(f"voices must be one of {', '.join(SPLITS)}, got {split!r}")
    return SPLITS[split]
