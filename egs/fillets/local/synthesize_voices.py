"""Extra training voices from Festival: fillets-ng subtitles read by Debian's festvox voices -> 16 kHz FLAC.

The fillets corpus trains on two voices, and a voice the tokenizer never heard falls on a subset of the first
codebook's codes (docs/MODEL_CARD.md, Known limits). This script makes more voices offline: each Festival voice reads
lines of the game's own subtitles in its language, in the corpus layout
``OUT/<speaker>/<level>/<speaker>-<level>-<n>.flac`` with ``<speaker>-<level>.trans.txt`` beside them, ready
for ``vqaudio prepare``. Only languages the fillets voices do not speak in dev/test are needed for variety,
but Czech voices are included because the game's Czech subtitles are the richest.

    apt-get install festival festvox-czech-dita festvox-czech-krb festvox-czech-machac festvox-czech-ph \\
        festvox-ru festvox-italp16k festvox-itapc16k
    python egs/fillets/local/synthesize_voices.py data/fillets/root data/festival_voices --lines 170

Each utterance is peak-normalised to a random level in -12..-3 dBFS (seeded), as varied as acted speech.
Festival reads the subtitle text, so the corpus has transcripts; voices are synthetic (diphone / unit
selection), with the prosody of a TTS engine.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf
import soxr
from prepare_fillets import find_fillets_data  # egs/fillets/local/prepare_fillets.py, beside this script

from vqaudio.data.librispeech import ChapterWriter
from vqaudio.io.atomic import atomic_folder

SAMPLE_RATE = 16000
MIN_WORDS, MAX_WORDS = 3, 30
MIN_SECONDS = 0.5
LEVEL_DB = (-12.0, -3.0)


class FestivalVoice(NamedTuple):
    voice: str  # Festival's name: (voice_<voice>)
    language: str  # fillets subtitles read: script/*/dialogs_<language>.lua
    encoding: str  # the text encoding the voice's front end expects
    package: str  # the Debian package that installs it


VOICES = {
    "tts-cs-dita": FestivalVoice("czech_dita", "cs", "iso-8859-2", "festvox-czech-dita"),
    "tts-cs-krb": FestivalVoice("czech_krb", "cs", "iso-8859-2", "festvox-czech-krb"),
    "tts-cs-machac": FestivalVoice("czech_machac", "cs", "iso-8859-2", "festvox-czech-machac"),
    "tts-cs-ph": FestivalVoice("czech_ph", "cs", "iso-8859-2", "festvox-czech-ph"),
    "tts-ru-nsh": FestivalVoice("msu_ru_nsh_clunits", "ru", "utf-8", "festvox-ru"),
    "tts-it-lp": FestivalVoice("lp_diphone", "it", "iso-8859-1", "festvox-italp16k"),
    "tts-it-pc": FestivalVoice("pc_diphone", "it", "iso-8859-1", "festvox-itapc16k"),
}


class VoiceMissing(Exception):
    """Festival said nothing with this voice: it is not installed (or broken)."""

    def __init__(self, voice: FestivalVoice) -> None:
        super().__init__(voice.voice)
        self.voice = voice


DIALOG_STRING = re.compile(r'dialogStr\("(.*)"\)')


def subtitle_lines(fillets_root: Path, language: str) -> list[tuple[str, str]]:
    """(level, text) of every ``dialogStr`` subtitle in ``language`` with MIN_WORDS..MAX_WORDS words.

    In file order, repeats included, quotes and backslashes dropped (Festival reads the text inside a
    Scheme string).
    """
    lines = []
    for dialogs in sorted((fillets_root / "script").glob(f"*/dialogs_{language}.lua")):
        for raw in DIALOG_STRING.findall(dialogs.read_text(encoding="utf-8")):
            text = raw.replace("\\n", " ").replace('\\"', "").replace('"', "").replace("\\", "").strip()
            if MIN_WORDS <= len(text.split()) <= MAX_WORDS:
                lines.append((dialogs.parent.name, text))
    return lines


def synthesize(voice: FestivalVoice, texts: list[str], folder: Path) -> None:
    """``folder/<i>.wav`` for each text Festival can say; empty texts are skipped.

    One ``festival -b`` run says many lines; a line that fails is skipped (``unwind-protect``), and when a
    line crashes Festival outright, the run is restarted after it.
    """
    pending = [index for index, text in enumerate(texts) if text]
    silent_runs = 0
    while pending:
        commands = [f"(voice_{voice.voice})"]
        for index in pending:
            wav = folder / f"{index}.wav"
            commands.append(
                f'(unwind-protect (utt.save.wave (utt.synth (Utterance Text "{texts[index]}")) "{wav}" \'riff) nil)'
            )
        script = folder / "batch.scm"
        script.write_bytes("\n".join(commands).encode(voice.encoding, errors="ignore"))
        subprocess.run(["festival", "-b", str(script)], capture_output=True, check=False)
        said = [index for index in pending if (folder / f"{index}.wav").is_file()]
        if not said:
            silent_runs += 1
            if silent_runs == 3:
                return  # three lines in a row crashed it: the voice is missing or broken
            pending = pending[1:]
            continue
        silent_runs = 0
        # after the last line said, the first missing one stopped the run: skip it, retry the rest
        pending = [index for index in pending if index > said[-1]][1:]


def write_voice(
    speaker: str, voice: FestivalVoice, picks: list[tuple[str, str]], out: Path, rng: random.Random
) -> float:
    """Synthesise ``picks`` and write them as corpus files; returns the seconds written."""
    texts = []
    for _, text in picks:  # a line the voice's encoding cannot hold would be garbled: skip it
        try:
            text.encode(voice.encoding)
            texts.append(text)
        except UnicodeEncodeError:
            texts.append("")
    corpus = ChapterWriter(out, SAMPLE_RATE)
    with tempfile.TemporaryDirectory() as tmp:
        synthesize(voice, texts, Path(tmp))
        for index, ((level, text), said) in enumerate(zip(picks, texts, strict=True)):
            wav = Path(tmp) / f"{index}.wav"
            if not said or not wav.is_file():
                continue
            audio, rate = sf.read(wav, dtype="float32", always_2d=True)
            mono = audio.mean(axis=1)
            if rate != SAMPLE_RATE:
                mono = soxr.resample(mono, rate, SAMPLE_RATE)
            peak = float(np.abs(mono).max()) if mono.size else 0.0
            if mono.size < MIN_SECONDS * SAMPLE_RATE or peak < 1e-3:
                continue
            mono = mono / peak * 10 ** (rng.uniform(*LEVEL_DB) / 20)
            corpus.add(speaker, level, index, mono, text)
    corpus.write_transcripts()
    return corpus.seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "fillets", type=Path, help="fillets-ng data (a dpkg -x root or the fillets-ng folder)"
    )
    parser.add_argument("out", type=Path, help="output corpus folder (must not exist, or --overwrite)")
    parser.add_argument("--voices", default=",".join(VOICES), help="comma-separated speakers (default: all)")
    parser.add_argument(
        "--lines", type=int, default=170, help="subtitle lines per voice (default 170, ~10 min)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace OUT")
    args = parser.parse_args(argv)

    speakers = [name.strip() for name in args.voices.split(",") if name.strip()]
    unknown = [name for name in speakers if name not in VOICES]
    if unknown:
        parser.error(f"unknown voice(s) {unknown}; choose from {', '.join(VOICES)}")
    if shutil.which("festival") is None:
        packages = " ".join(VOICES[name].package for name in speakers)
        print(
            f"error: festival not found; install it with: apt-get install festival {packages}",
            file=sys.stderr,
        )
        return 1
    fillets_root = find_fillets_data(args.fillets)
    if args.out.exists() and not args.overwrite:
        print(f"error: {args.out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 1
    rng = random.Random(args.seed)
    try:
        with atomic_folder(args.out) as staging:  # replaces OUT only when every voice is done
            for speaker in speakers:
                voice = VOICES[speaker]
                pool = subtitle_lines(fillets_root, voice.language)
                picks = rng.sample(pool, min(args.lines, len(pool)))
                seconds = write_voice(speaker, voice, picks, staging, rng)
                if seconds == 0:
                    raise VoiceMissing(voice)
                print(f"{speaker}: {len(picks)} lines, {seconds / 60:.1f} min", flush=True)
    except VoiceMissing as error:
        print(
            f"error: festival said nothing with voice {error.voice.voice}; install it with: "
            f"apt-get install {error.voice.package}",
            file=sys.stderr,
        )
        return 1
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
