#!/usr/bin/env python3
"""Synthesise a few minutes of multi-speaker speech offline, in the LibriSpeech layout.

Each "speaker" is an espeak-ng voice variant with its own pitch and rate, reading a rotating subset of the
sentences below; the output is ``OUT/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` at 16 kHz with a
``<speaker>-<chapter>.trans.txt`` per chapter, so ``vqaudio prepare`` reads speakers and transcripts and can
hold whole speakers out. Without espeak-ng (or with --no-espeak) the voices are harmonic "speech-like"
signals (moving pitch, formant-like resonances, syllable envelopes) instead, so the recipe still runs.

Usage: make_corpus.py OUT [--speakers 10] [--sentences 8] [--seed 0] [--no-espeak]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy.signal import lfilter

SAMPLE_RATE = 16000

# (espeak-ng voice+variant, pitch 0-99, words per minute): classic variants present in every espeak-ng install
VOICES = [
    ("en-us+m1", 40, 160),
    ("en-gb+f2", 60, 150),
    ("en+m3", 30, 170),
    ("en-us+f3", 70, 155),
    ("en-gb-scotland+m4", 45, 165),
    ("en+f4", 55, 145),
    ("en-us+m7", 35, 175),
    ("en-gb+f1", 65, 160),
    ("en-029+m2", 50, 150),
    ("en+f5", 75, 170),
    ("en-us+m5", 25, 140),
    ("en-gb+f3", 80, 165),
]

SENTENCES = [
    "The small boat drifted slowly toward the rocky shore.",
    "Please bring the red folder to the meeting tomorrow morning.",
    "A cold wind blew across the empty field at dawn.",
    "She counted seven birds sitting on the telephone wire.",
    "The old clock in the hall stopped at half past nine.",
    "We planted tomatoes, beans and a row of sunflowers.",
    "His voice was calm, but his hands were shaking.",
    "The train to the coast leaves every hour on the hour.",
    "Nobody expected the quiet student to win the prize.",
    "Fresh bread and warm soup make a fine winter supper.",
    "The river rose three feet after the heavy rain.",
    "Turn left at the bakery and walk past the fountain.",
    "A thin layer of dust covered the piano keys.",
    "They argued about the map until the sun went down.",
    "The engineer checked every bolt on the bridge twice.",
    "Children laughed as the puppy chased its own tail.",
    "The library closes early on the first Friday of the month.",
    "Bright lanterns hung from the branches of the old oak.",
    "He wrote the number on the back of an envelope.",
    "Strong coffee kept the night shift awake until morning.",
    "The museum guard nodded and opened the heavy door.",
    "Rain tapped gently against the kitchen window.",
    "Our neighbour repairs bicycles in his garage on weekends.",
    "The letter arrived three weeks after it was sent.",
]


def espeak(text: str, voice: str, pitch: int, speed: int, workdir: Path) -> np.ndarray:
    """One sentence from espeak-ng, mono float32 at SAMPLE_RATE."""
    wav = workdir / "utterance.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(wav), text],
        check=True,
        capture_output=True,
    )
    audio, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    return soxr.resample(mono, rate, SAMPLE_RATE).astype(np.float32)


def speech_like(text: str, speaker: int, rng: np.random.Generator) -> np.ndarray:
    """A harmonic stand-in for speech: one voiced 'syllable' per vowel group of ``text``."""
    f0_base = 95.0 + 22.0 * speaker
    syllables = max(3, sum(1 for word in text.split() for _ in range(max(1, len(word) // 3))))
    pieces = []
    for _ in range(syllables):
        n = int(SAMPLE_RATE * rng.uniform(0.12, 0.22))
        t = np.arange(n) / SAMPLE_RATE
        f0 = f0_base * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(1, 3) * t + rng.uniform(0, np.pi)))
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
        source = sum(np.sin(k * phase) / k for k in range(1, 25)).astype(np.float64)
        for formant in (rng.uniform(300, 800), rng.uniform(900, 2200), rng.uniform(2300, 3200)):
            radius = np.exp(-np.pi * 120 / SAMPLE_RATE)  # ~120 Hz bandwidth resonator
            theta = 2 * np.pi * formant / SAMPLE_RATE
            source = lfilter([1 - radius], [1, -2 * radius * np.cos(theta), radius**2], source)
        envelope = np.sin(np.pi * np.arange(n) / n) ** 2
        pieces.append(source * envelope)
        pieces.append(np.zeros(int(SAMPLE_RATE * rng.uniform(0.02, 0.08))))
    audio = np.concatenate(pieces)
    audio += 0.003 * rng.standard_normal(audio.shape[0])
    return (0.3 * audio / (np.abs(audio).max() + 1e-9)).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="output folder (LibriSpeech layout)")
    parser.add_argument("--speakers", type=int, default=10, help=f"voices, at most {len(VOICES)}")
    parser.add_argument(
        "--sentences", type=int, default=8, help=f"sentences per speaker, at most {len(SENTENCES)}"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-espeak", action="store_true", help="use the harmonic stand-in even if espeak-ng exists"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.speakers <= len(VOICES) or not 1 <= args.sentences <= len(SENTENCES):
        parser.error(f"--speakers must be in 1..{len(VOICES)} and --sentences in 1..{len(SENTENCES)}")
    use_espeak = not args.no_espeak and shutil.which("espeak-ng") is not None
    print(
        f"synthesising with {'espeak-ng' if use_espeak else 'the harmonic stand-in (no espeak-ng)'}",
        file=sys.stderr,
    )
    rng = np.random.default_rng(args.seed)
    total = 0.0
    with tempfile.TemporaryDirectory() as workdir:
        for index in range(args.speakers):
            voice, pitch, speed = VOICES[index]
            speaker, chapter = f"{1000 + index}", f"{index + 1}"
            folder = args.out / speaker / chapter
            folder.mkdir(parents=True, exist_ok=True)
            lines = []
            for number in range(args.sentences):
                text = SENTENCES[(index * 3 + number) % len(SENTENCES)]
                if use_espeak:
                    audio = espeak(text, voice, pitch, speed, Path(workdir))
                else:
                    audio = speech_like(text, index, rng)
                utterance_id = f"{speaker}-{chapter}-{number:04d}"
                sf.write(
                    str(folder / f"{utterance_id}.flac"), np.clip(audio, -1, 1), SAMPLE_RATE, subtype="PCM_16"
                )
                lines.append(f"{utterance_id} {text.upper().rstrip('.')}")
                total += audio.shape[0] / SAMPLE_RATE
            (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    print(
        f"wrote {args.speakers} speakers x {args.sentences} sentences, {total / 60:.1f} min, to {args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
