"""More real training speech from Debian: Asterisk's wideband voice prompts (G.722, 16 kHz) -> 16 kHz FLAC.

The Asterisk PBX's core sound packages hold studio recordings of one professional voice per language, each
about 25 minutes of prompts, digits, letters and phonetic-alphabet words, stored as raw G.722 (64 kbit/s,
16 kHz), which neither soundfile nor sox reads; FFmpeg's decoder does, through PyAV (``pip install
'vqaudio[recipes]'`` or ``pip install av``: the wheels ship FFmpeg)::

    asterisk-core-sounds-en-g722  en_US_f_Allison      Allison Smith        CC-BY-SA-3.0
    asterisk-core-sounds-es-g722  es_MX_f_Allison      Allison Smith        CC-BY-SA-3.0
    asterisk-core-sounds-fr-g722  fr_CA_f_June         June Wallack         CC-BY-SA-3.0
    asterisk-core-sounds-it-g722  it_IT_m_Carlo        Carlo Flora          CC-BY-3.0
    asterisk-core-sounds-ru-g722  ru_RU_f_IvrvoiceRU   (ivrvoice.ru)        CC-BY-3.0

Each voice folder ``usr/share/asterisk/sounds/<lang>_<REGION>_<sex>_<Name>`` is one speaker,
``ast-<lang>-<name>`` (``ast-en-allison``). Tones (``beep``, ``*-2tone``, the conference join/leave chimes)
and the ``silence/`` folder are not speech and are skipped, as are clips shorter than ``--min-seconds`` once
their leading and trailing silence is trimmed (as ``gather_voices.py`` trims). The Debian packages ship no
transcripts; where a ``core-sounds-<lang>.txt`` (upstream's ``name: text`` list) lies in the voice folder or
the package's doc folder its text is kept, else the transcript is the prompt's name (``vm-goodbye``,
``digits/5``). Only the G.722 files are read: the ``-wav``/``-gsm`` packages and the ``asterisk-prompt-*``
voices are 8 kHz, and ``pocketsphinx`` paths (the English evaluation set) are refused wherever they lie.

Output is the corpus layout ``OUT/<speaker>/<folder>/<speaker>-<folder>-<n>.flac`` with ``.trans.txt`` files
that ``vqaudio prepare`` reads (``<folder>`` is ``prompts`` or the package's subfolder: ``digits``,
``letters``, ...), and ``OUT/summary.json`` (minutes, clips and language per speaker, skipped clips by reason).
OUT appears complete or not at all.

    apt-get download asterisk-core-sounds-{en,es,fr,it,ru}-g722
    for deb in asterisk-core-sounds-*.deb; do dpkg -x "$deb" data/speech_root; done
    python egs/fillets/local/gather_speech.py data/speech_root data/more_speech
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import numpy as np
from gather_voices import SAMPLE_RATE, trim_silence  # egs/fillets/local/gather_voices.py

from vqaudio.data.librispeech import ChapterWriter
from vqaudio.io.atomic import atomic_folder

SOUNDS = "usr/share/asterisk/sounds"
LANGUAGES = ("en", "es", "fr", "it", "ru")
PACKAGES = " ".join(f"asterisk-core-sounds-{language}-g722" for language in LANGUAGES)
NON_SPEECH = {"beep", "beeperr", "ascending-2tone", "descending-2tone", "confbridge-join", "confbridge-leave"}
NON_SPEECH_FOLDERS = {"silence"}
EVALUATION_ONLY = "pocketsphinx"  # pocketsphinx-testdata: the English evaluation set, never training data
TOP_FOLDER = "prompts"  # the chapter of the files directly in a voice folder


class Voice(NamedTuple):
    speaker: str  # ast-<lang>-<name>
    language: str
    folder: Path  # usr/share/asterisk/sounds/<lang>_<REGION>_<sex>_<Name>
    files: list[Path]  # its .g722 files, sorted; tones and silence already left out
    texts: dict[str, str]  # prompt name ("digits/5") -> transcript, where the package has one


class VoiceResult(NamedTuple):
    seconds: float
    clips: int
    skipped: Counter[str]  # reason -> files


class Summary(NamedTuple):  # OUT/summary.json
    minutes: dict[str, float]  # per speaker, after trimming
    clips: dict[str, int]
    languages: dict[str, str]
    skipped: dict[str, int]  # reason -> files


def voice_name(folder: str) -> tuple[str, str]:
    """``en_US_f_Allison`` -> (``en``, ``ast-en-allison``); a folder of another form -> (its name, ``ast-<it>``)."""
    parts = folder.split("_")
    if len(parts) >= 4:
        return parts[0].lower(), f"ast-{parts[0].lower()}-{'-'.join(parts[3:]).lower()}"
    return folder.lower(), f"ast-{folder.lower().replace('_', '-')}"


def prompt_name(path: Path, folder: Path) -> str:
    """``.../en_US_f_Allison/digits/5.g722`` -> ``digits/5``: the name Asterisk plays it by."""
    return path.relative_to(folder).with_suffix("").as_posix()


def read_prompt_texts(paths: list[Path]) -> dict[str, str]:
    """Upstream's ``core-sounds-<lang>.txt``: ``name: text`` lines, ``;`` comments."""
    texts: dict[str, str] = {}
    for path in paths:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            name, colon, text = line.partition(":")
            if colon and not line.lstrip().startswith(";") and name.strip() and text.strip():
                texts[name.strip()] = " ".join(text.split())
    return texts


def import_av() -> ModuleType:
    """PyAV (FFmpeg's G.722 decoder), imported only when needed: the ``recipes`` extra."""
    try:
        import av
    except ImportError as exc:
        raise ImportError(
            "gather_speech.py needs PyAV to decode G.722: pip install 'vqaudio[recipes]' (or pip install av)"
        ) from exc
    return av


def read_g722(path: Path) -> np.ndarray:
    """A raw ``.g722`` file (64 kbit/s) -> 16 kHz mono float32 in [-1, 1): FFmpeg's samples / 32768.

    Raises:
        ImportError: PyAV is not installed.
        OSError: a file that cannot be read.
        ValueError: one FFmpeg cannot decode (``av.InvalidDataError``).
    """
    with import_av().open(str(path), format="g722") as container:  # the raw demuxer: 16 kHz mono
        chunks = [frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)]  # int16, (1, n) each
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    return pcm.astype(np.float32) / 32768.0


def find_voices(root: Path) -> tuple[list[Voice], Counter[str]]:
    """The voices unpacked under ``root`` (``dpkg -x``), and the files left out, by reason."""
    skipped: Counter[str] = Counter()
    voices = []
    sounds = root / SOUNDS
    folders = sorted(path for path in sounds.iterdir() if path.is_dir()) if sounds.is_dir() else []
    for folder in folders:
        files = []
        for path in sorted(folder.rglob("*.g722")):
            relative = path.relative_to(folder)
            if EVALUATION_ONLY in path.relative_to(root).as_posix().lower():
                skipped["evaluation set (pocketsphinx)"] += 1
            elif path.stem in NON_SPEECH or relative.parts[0] in NON_SPEECH_FOLDERS:
                skipped["not speech (tones, silence)"] += 1
            else:
                files.append(path)
        if not files:
            continue
        language, speaker = voice_name(folder.name)
        pattern = (
            f"core-sounds-{language}*.txt"  # a voice's own language: prompt names repeat across languages
        )
        lists = sorted(folder.glob(pattern)) + sorted(root.glob(f"usr/share/doc/*/{pattern}"))
        voices.append(Voice(speaker, language, folder, files, read_prompt_texts(lists)))
    return voices, skipped


def write_voice(voice: Voice, out: Path, max_seconds: float, min_seconds: float, seed: int) -> VoiceResult:
    """Convert ``voice`` (in a seeded random order, up to ``max_seconds``) into ``out``.

    Raises:
        OSError, ValueError: a file that cannot be read or decoded (the caller's ``atomic_folder`` then leaves
            nothing behind).
    """
    skipped: Counter[str] = Counter()
    numbers = {path: number for number, path in enumerate(voice.files)}  # stable ids, whatever the cap
    order = list(voice.files)
    random.Random(f"{seed}-{voice.speaker}").shuffle(
        order
    )  # per voice: the same subset whatever else is there
    corpus = ChapterWriter(out, SAMPLE_RATE)
    clips = 0
    for path in order:
        if corpus.seconds >= max_seconds:
            skipped["over the per-voice cap"] += 1
            continue
        clip = trim_silence(read_g722(path), min_seconds)
        if clip is None:
            skipped[f"shorter than {min_seconds:g} s or silent"] += 1
            continue
        name = prompt_name(path, voice.folder)
        chapter = path.parent.name.lower().replace("_", "-") if path.parent != voice.folder else TOP_FOLDER
        corpus.add(voice.speaker, chapter, numbers[path], clip, voice.texts.get(name, name))
        clips += 1
    corpus.write_transcripts()
    return VoiceResult(corpus.seconds, clips, skipped)


def gather_speech(
    root: Path,
    out: Path,
    *,
    max_minutes: float = 40.0,
    min_seconds: float = 0.5,
    seed: int = 0,
    overwrite: bool = False,
) -> Summary:
    """Every Asterisk G.722 voice under ``root`` -> the corpus ``out`` (see the module docstring).

    Raises:
        ImportError: PyAV is not installed (checked before any work).
        ValueError: no voice under ``root``, ``out`` exists without ``overwrite``, or a file FFmpeg cannot decode.
        OSError: an unreadable file. ``out`` is left as it was after any error.
    """
    import_av()
    voices, skipped = find_voices(root)
    if not voices:
        raise ValueError(
            f"no Asterisk G.722 voices under {root / SOUNDS}; unpack them there with: apt-get download "
            f"{PACKAGES} && dpkg -x <each .deb> {root}"
        )
    if out.exists() and not overwrite:
        raise ValueError(f"{out} exists; pass --overwrite to replace it")
    summary = Summary({}, {}, {voice.speaker: voice.language for voice in voices}, {})
    with atomic_folder(out) as staging:  # replaces OUT only when every voice is done
        for voice in voices:
            result = write_voice(voice, staging, max_minutes * 60, min_seconds, seed)
            summary.minutes[voice.speaker] = round(result.seconds / 60, 2)
            summary.clips[voice.speaker] = result.clips
            skipped += result.skipped
            print(f"{voice.speaker}: {result.seconds / 60:.1f} min, {result.clips} clips", flush=True)
        summary.skipped.update(sorted(skipped.items()))
        (staging / "summary.json").write_text(
            json.dumps(summary._asdict(), indent=2) + "\n", encoding="utf-8"
        )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help=f"where {PACKAGES} are unpacked (dpkg -x)")
    parser.add_argument("out", type=Path, help="output corpus folder (must not exist, or --overwrite)")
    parser.add_argument("--max-minutes", type=float, default=40.0, help="per voice (default 40: none is cut)")
    parser.add_argument(
        "--min-seconds", type=float, default=0.5, help="shorter clips are skipped (default 0.5)"
    )
    parser.add_argument("--seed", type=int, default=0, help="which clips a voice over the cap keeps")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT")
    args = parser.parse_args(argv)
    if args.max_minutes <= 0 or args.min_seconds < 0:
        parser.error(
            f"--max-minutes must be > 0 and --min-seconds >= 0, got {args.max_minutes}, {args.min_seconds}"
        )
    try:
        summary = gather_speech(
            args.root,
            args.out,
            max_minutes=args.max_minutes,
            min_seconds=args.min_seconds,
            seed=args.seed,
            overwrite=args.overwrite,
        )
    except (ValueError, OSError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    skipped = ", ".join(f"{count} {reason}" for reason, count in summary.skipped.items()) or "none"
    print(
        f"wrote {args.out}: {len(summary.minutes)} voices, {sum(summary.minutes.values()) / 60:.2f} h, "
        f"{sum(summary.clips.values())} clips; skipped: {skipped}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
