"""More real training voices from Debian: KLettres' letters and syllables, Hedgewars' voice packs -> 16 kHz FLAC.

The fillets corpus trains on two real voices, and a tokenizer trained on few voices generalises poorly to
voices it never heard (docs/MODEL_CARD.md, Known limits). Two Debian data packages hold recordings of many more people:

- ``klettres-data`` (KDE's alphabet tutor, GPL): native speakers saying the letters and syllables of their
  language, one folder per language (``<lang>/alpha``, ``<lang>/syllab``); taken as one speaker per language.
- ``hedgewars-data`` (its sounds GFDL-1.3): acted voice packs, short exclamations; only the packs in other
  languages than English are taken (``Default_es``, ``Default_pl``, ...), and ``Robot`` (processed) never.

English is left out on purpose (``en``, ``en_GB`` and the English packs), so the English evaluation clips stay
a language the tokenizer never heard. Output is the corpus layout ``OUT/<speaker>/<group>/<speaker>-<group>-
<n>.flac`` with ``.trans.txt`` files (the source file's name, which says what is said) that ``vqaudio
prepare`` reads; leading and trailing silence is trimmed, and a voice with more than ``--max-minutes`` is cut
to a seeded random subset so no single voice dominates.

    apt-get download klettres-data hedgewars-data
    dpkg -x klettres-data_*.deb data/extra_root && dpkg -x hedgewars-data_*.deb data/extra_root
    python egs/fillets/local/gather_voices.py data/extra_root data/extra_voices
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import librosa
import numpy as np

from vqaudio.data.librispeech import ChapterWriter
from vqaudio.errors import AudioError
from vqaudio.io.atomic import atomic_folder
from vqaudio.io.audio import load_audio

SAMPLE_RATE = 16000
MIN_SECONDS = 0.3
TRIM_TOP_DB = 40.0  # librosa.effects.trim: what counts as silence, below the clip's peak
KLETTRES = "usr/share/klettres"
HEDGEWARS = "usr/share/games/hedgewars/Data/Sounds/voices"
ENGLISH_KLETTRES = {"en", "en_GB"}
HEDGEWARS_PACKS = ("Default_es", "Default_pl", "Default_ru", "Default_uk", "Russian", "Russian_pl")
PACKAGES = "klettres-data hedgewars-data"


def find_sources(root: Path) -> dict[str, list[Path]]:
    """speaker -> its audio files, from the packages unpacked under ``root``."""
    sources: dict[str, list[Path]] = {}
    klettres = root / KLETTRES
    if klettres.is_dir():
        for language in sorted(path for path in klettres.iterdir() if path.is_dir()):
            if language.name in ENGLISH_KLETTRES:
                continue
            files = sorted(language.glob("*/*.ogg"))
            if files:
                sources[f"kl-{language.name.replace('_', '-').lower()}"] = files
    hedgewars = root / HEDGEWARS
    for pack in HEDGEWARS_PACKS:
        files = sorted((hedgewars / pack).glob("*.ogg"))
        if files:
            sources[f"hw-{pack.replace('_', '-').lower()}"] = files
    return sources


def load_clip(path: Path) -> np.ndarray | None:
    """16 kHz mono float32, silence trimmed; None when unreadable, silent or too short."""
    try:
        mono = load_audio(path, SAMPLE_RATE).numpy()
    except AudioError:
        return None
    return trim_silence(mono, MIN_SECONDS)


def trim_silence(mono: np.ndarray, min_seconds: float) -> np.ndarray | None:
    """``mono`` (16 kHz) without its leading and trailing silence (``TRIM_TOP_DB`` below the clip's peak);
    None when the clip is silent or shorter than ``min_seconds`` once trimmed."""
    if mono.size == 0 or float(np.abs(mono).max()) < 1e-3:
        return None
    trimmed, _ = librosa.effects.trim(mono, top_db=TRIM_TOP_DB, frame_length=512, hop_length=128)
    if trimmed.size < min_seconds * SAMPLE_RATE:
        return None
    return trimmed


def write_voice(speaker: str, files: list[Path], out: Path, max_seconds: float, rng: random.Random) -> float:
    """Convert ``files`` (in a seeded random order, up to ``max_seconds``); returns the seconds written."""
    order = list(files)
    rng.shuffle(order)
    corpus = ChapterWriter(out, SAMPLE_RATE)
    for index, path in enumerate(order):
        if corpus.seconds >= max_seconds:
            break
        clip = load_clip(path)
        if clip is None:
            continue
        group = path.parent.name.lower().replace("_", "-")
        corpus.add(speaker, group, index, clip, path.stem)  # the source file's name says what is said
    corpus.write_transcripts()
    return corpus.seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help=f"where {PACKAGES} are unpacked (dpkg -x)")
    parser.add_argument("out", type=Path, help="output corpus folder (must not exist, or --overwrite)")
    parser.add_argument("--max-minutes", type=float, default=5.0, help="per voice (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace OUT")
    args = parser.parse_args(argv)

    sources = find_sources(args.root)
    if not sources:
        print(
            f"error: no KLettres or Hedgewars voices under {args.root}; unpack them there with: "
            f"apt-get download {PACKAGES} && dpkg -x <each .deb> {args.root}",
            file=sys.stderr,
        )
        return 1
    if args.out.exists() and not args.overwrite:
        print(f"error: {args.out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 1
    rng = random.Random(args.seed)
    total = 0.0
    with atomic_folder(args.out) as staging:  # replaces OUT only when every voice is done
        for speaker, files in sources.items():
            seconds = write_voice(speaker, files, staging, args.max_minutes * 60, rng)
            total += seconds
            print(f"{speaker}: {seconds / 60:.1f} min", flush=True)
    print(f"wrote {args.out}: {len(sources)} voices, {total / 3600:.2f} h")
    return 0


if __name__ == "__main__":
    sys.exit(main())
