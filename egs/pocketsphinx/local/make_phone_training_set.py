#!/usr/bin/env python3
"""Synthesise a phone-labelled English TRAINING set offline: espeak-ng voices reading original sentences.

What: about an hour of English speech (``--speakers 32 --sentences-per-speaker 40``: 1,280 utterances) in the
LibriSpeech layout, ``OUT/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` at 16 kHz with a
``<speaker>-<chapter>.trans.txt`` per chapter, plus ``OUT/voices.tsv`` (speaker, voice, pitch, rate). Each
speaker is an espeak-ng accent + voice variant with its own pitch and rate, reading its own slice of the
sentences in ``phone_training_sentences.txt`` (shuffled once by ``--seed``; speaker i reads the
``--sentences-per-speaker`` sentences after speaker i - 1's, wrapping around, so each sentence is read by
about ``speakers x sentences-per-speaker / number of sentences`` different voices). ``vqaudio prepare`` and
``vqaudio align`` (pocketsphinx forced alignment; every word of the sentences is in its CMU dictionary) turn it
into phone labels, for training a tokenizer whose first codebook should predict phones
(``egs/pocketsphinx/run.sh --stage 6 --stop-stage 6``).

Why a separate set: ``egs/mini/local/make_corpus.py`` (its 12 ``VOICES`` and 24 ``SENTENCES``) is the held-out
English set of the phonetic probe (run.sh stages 4 and 5) and stays evaluation-only. This set shares nothing
with it: no sentence, no voice variant (make_corpus uses the classic +m1..+m5, +m7 and +f1..+f5; these are
other variants), no (pitch, rate) pair, and its speaker ids start at 2000 (make_corpus's at 1000). Variants
that do not sound like speech (whisper, robots, echoes, croak) or that pocketsphinx often cannot follow (in
a screening, aligning 8 to 40 sentences per voice: Andy, Annie, Alicia, Andrea, boris, grandma, Lee, kaukovalta,
Marco, Mario, norbert, quincy, rob, robert, shelby, travis, Tweaky, zac) are left out; with these voices about
3% of the utterances still fail to align (``vqaudio align --skip-bad`` leaves them out and lists them).

The output is the same for the same arguments and espeak-ng version. Needs espeak-ng (Debian package).

Usage: make_phone_training_set.py OUT [--speakers 32] [--sentences-per-speaker 40] [--seed 0]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "mini" / "local"))
from make_corpus import SAMPLE_RATE, espeak  # noqa: E402  (egs/mini/local: the same espeak-ng helper)

SENTENCES_FILE = Path(__file__).with_name("phone_training_sentences.txt")
FIRST_SPEAKER_ID = 2000

# (espeak-ng accent+variant, pitch 0-99, words per minute). None of these variants is in make_corpus.VOICES,
# and no (pitch, rate) pair is either. Accents: en-us (with its New York City form), en (British), Received
# Pronunciation, Scottish, Lancaster, West Midlands and Caribbean English.
VOICES = [
    ("en-us+m6", 42, 158),
    ("en-us+steph", 54, 156),
    ("en-gb-x-rp+klatt2", 38, 152),
    ("en-us+anika", 52, 146),
    ("en-us+klatt3", 55, 168),
    ("en-gb+aunty", 56, 148),
    ("en+klatt4", 47, 146),
    ("en-us-nyc+steph2", 58, 153),
    ("en-gb-x-gbclan+klatt5", 44, 156),
    ("en-gb-scotland+steph3", 60, 161),
    ("en-us+klatt6", 36, 172),
    ("en-us+linda", 57, 143),
    ("en-us+Denis", 52, 150),
    ("en-gb+belinda", 50, 151),
    ("en-gb-scotland+Gene", 46, 158),
    ("en-us+Gene2", 58, 144),
    ("en-029+Hugo", 48, 154),
    ("en-us+Mr serious", 40, 148),
    ("en-us+Storm", 44, 163),
    ("en-gb-x-rp+adam", 50, 157),
    ("en-us+Alex", 46, 166),
    ("en-us+antonio", 50, 152),
    ("en-us+benjamin", 42, 161),
    ("en-gb-x-gbcwmd+david", 50, 147),
    ("en-us+ed", 48, 159),
    ("en-gb+edward", 45, 164),
    ("en-us+edward2", 53, 142),
    ("en-us+iven", 47, 155),
    ("en-gb-x-rp+john", 43, 151),
    ("en-us+max", 46, 167),
    ("en+Mike", 39, 157),
    ("en-us+victor", 51, 149),
]


def read_sentences(path: Path = SENTENCES_FILE) -> list[str]:
    """The sentences of ``path``, one a line; blank lines and lines starting with '#' skipped."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def transcript(text: str) -> str:
    """LibriSpeech style, as make_corpus writes it: upper case, the final full stop or question mark dropped."""
    return text.upper().rstrip(".?!")


def assignments(speakers: int, per_speaker: int, count: int, seed: int) -> list[list[int]]:
    """Sentence indices per speaker: a seeded permutation of ``range(count)`` read in consecutive, wrapping
    slices of ``per_speaker``, so that readings spread evenly over the sentences and voices."""
    order = np.random.default_rng(seed).permutation(count)
    return [
        [int(order[(index * per_speaker + k) % count]) for k in range(per_speaker)]
        for index in range(speakers)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "out", type=Path, help="output folder (LibriSpeech layout); must not exist or be empty"
    )
    parser.add_argument("--speakers", type=int, default=32, help=f"voices, at most {len(VOICES)}")
    parser.add_argument("--sentences-per-speaker", type=int, default=40, help="sentences each voice reads")
    parser.add_argument("--seed", type=int, default=0, help="shuffles which sentences each voice reads")
    args = parser.parse_args(argv)
    sentences = read_sentences()
    if not 1 <= args.speakers <= len(VOICES):
        parser.error(f"--speakers must be in 1..{len(VOICES)}")
    if not 1 <= args.sentences_per_speaker <= len(sentences):
        parser.error(f"--sentences-per-speaker must be in 1..{len(sentences)}")
    if shutil.which("espeak-ng") is None:
        parser.error("espeak-ng not found: install the Debian package espeak-ng")
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        parser.error(f"{args.out} exists and is not an empty folder: remove it first")
    plan = assignments(args.speakers, args.sentences_per_speaker, len(sentences), args.seed)
    total = 0.0
    voice_rows = ["speaker\tvoice\tpitch\trate"]
    with tempfile.TemporaryDirectory() as workdir:
        for index, chosen in enumerate(plan):
            voice, pitch, speed = VOICES[index]
            speaker, chapter = f"{FIRST_SPEAKER_ID + index}", f"{index + 1}"
            folder = args.out / speaker / chapter
            folder.mkdir(parents=True, exist_ok=True)
            lines = []
            for number, sentence_index in enumerate(chosen):
                text = sentences[sentence_index]
                audio = espeak(text, voice, pitch, speed, Path(workdir))
                utterance_id = f"{speaker}-{chapter}-{number:04d}"
                sf.write(
                    str(folder / f"{utterance_id}.flac"), np.clip(audio, -1, 1), SAMPLE_RATE, subtype="PCM_16"
                )
                lines.append(f"{utterance_id} {transcript(text)}")
                total += audio.shape[0] / SAMPLE_RATE
            (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
            voice_rows.append(f"{speaker}\t{voice}\t{pitch}\t{speed}")
            print(f"speaker {speaker} ({voice}): {len(chosen)} sentences", file=sys.stderr, flush=True)
    (args.out / "voices.tsv").write_text("\n".join(voice_rows) + "\n", encoding="utf-8")
    print(
        f"wrote {args.speakers} speakers x {args.sentences_per_speaker} sentences (of {len(sentences)}), "
        f"{total / 60:.1f} min, to {args.out}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
