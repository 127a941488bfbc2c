"""The English evaluation clips of Debian's ``pocketsphinx-testdata`` -> 16 kHz WAVs and a manifest with transcripts.

The package (``usr/share/pocketsphinx/test/data`` once unpacked) holds 13 English speech recordings at 16 kHz:

- ``librivox/*.wav``: five sentences of one LibriVox reader (Sense and Sensibility, chapter 1), transcribed
  in ``librivox/transcription``; kept under their own names, speaker ``librivox-sense-and-sensibility``;
- ``cards/*.wav``: five CMU test utterances naming playing cards, transcribed in ``cards/cards.transcription``;
  renamed ``cards-<name>.wav`` (their names are only numbers); speaker unknown;
- ``*.raw`` (``goforward``, ``numbers``, ``something``): headerless 16-bit mono recordings, written as WAV;
  the package ships no transcript for them (only grammars and keyword lists the tests decode them with), so
  their text stays empty and ``vqaudio eval --wer`` scores them against what it hears in the original.

Transcription lines read ``<s> ten of clubs </s> (001)``; the text is normalised as pocketsphinx's output is
(lower-case words, no punctuation, the ``<s>`` markers dropped). Output: ``OUT/<id>.wav`` and the manifest
(default ``OUT.tsv``) listing every clip with its speaker and transcript where known.

    apt-get download pocketsphinx-testdata && dpkg -x pocketsphinx-testdata_*.deb data/pocketsphinx/root
    python egs/pocketsphinx/local/gather_clips.py data/pocketsphinx/root data/pocketsphinx/clips
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf

from vqaudio.data.manifest import write_manifest
from vqaudio.data.utterance import Utterance
from vqaudio.errors import DataError, VQAudioError
from vqaudio.evaluation.voice import words
from vqaudio.io.atomic import atomic_folder

SAMPLE_RATE = 16000  # of every clip in the package, the .raw recordings included
TEST_DATA = "usr/share/pocketsphinx/test/data"
# <s> </s> <sil>, ++noise++, [noise]: markers and fillers of Sphinx transcripts, never spoken words
FILLER = re.compile(r"<[^>\s]*>|\+\+\S*\+\+|\[\S*\]")
# "<s> words </s> (utterance-id)", optionally with a score after the id as in .hyp / .match files
TRANSCRIPT_LINE = re.compile(r"^(?P<text>.*?)\s*\((?P<id>[^()\s]+)(?:\s+-?\d+)?\)\s*$")


class WavSource(NamedTuple):
    """One folder of WAV clips in the package and its transcription file."""

    folder: str  # under TEST_DATA
    transcription: str  # file name inside ``folder``
    prefix: str  # prepended to a clip's name
    speaker: str | None


WAV_SOURCES = (
    WavSource("librivox", "transcription", "", "librivox-sense-and-sensibility"),
    WavSource("cards", "cards.transcription", "cards-", None),
)


class GatherSummary(NamedTuple):
    clips: int
    with_text: int
    manifest: Path


def normalize_text(text: str) -> str:
    """A transcript as pocketsphinx writes its output: lower-case words, fillers and punctuation dropped."""
    return " ".join(words(FILLER.sub(" ", text)))


def read_transcription(path: Path) -> dict[str, str]:
    """Utterance id -> normalised text, from a Sphinx ``.transcription`` file.

    Raises:
        DataError: a line without ``(id)`` at its end, or an id given twice (named by file and line).
    """
    texts: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        match = TRANSCRIPT_LINE.match(line)
        if match is None:
            raise DataError(f"{path}:{number}: expected '<s> words </s> (utterance-id)', got {line!r}")
        if match["id"] in texts:
            raise DataError(f"{path}:{number}: utterance {match['id']!r} is transcribed twice")
        texts[match["id"]] = normalize_text(match["text"])
    return texts


def gather_clips(
    root: Path, out: Path, manifest: Path | None = None, overwrite: bool = False
) -> GatherSummary:
    """Write the package's speech clips to ``out`` as 16 kHz WAVs and list them in ``manifest``.

    Args:
        root: where ``pocketsphinx-testdata`` is unpacked (``dpkg -x``), or its ``test/data`` folder itself.
        out: the clips folder (must not exist unless ``overwrite``).
        manifest: the manifest to write; default ``out`` with the suffix ``.tsv``.
        overwrite: replace ``out`` and ``manifest``.
    Raises:
        DataError: no test data under ``root``, a WAV folder without clips or transcription, a transcript
            for a clip that is not there, a clip that is not 16 kHz mono.
    """
    data = root / TEST_DATA if (root / TEST_DATA).is_dir() else root
    if not (data / WAV_SOURCES[0].folder).is_dir():
        raise DataError(
            f"{root}: no {TEST_DATA}/{WAV_SOURCES[0].folder} folder; pass the folder where "
            "pocketsphinx-testdata_*.deb is unpacked (dpkg -x DEB ROOT)"
        )
    manifest = manifest if manifest is not None else out.with_suffix(".tsv")
    for path in (out, manifest):
        if path.exists() and not overwrite:
            raise DataError(f"{path} exists; pass --overwrite to replace it")

    # clip name -> (its file in the package, speaker, transcript)
    clips: dict[str, tuple[Path, str | None, str | None]] = {}
    for source in WAV_SOURCES:
        folder = data / source.folder
        wavs = sorted(folder.glob("*.wav"))
        transcription = folder / source.transcription
        if not wavs or not transcription.is_file():
            raise DataError(
                f"{folder}: expected *.wav clips and {source.transcription}, found {len(wavs)} clips"
                f"{'' if transcription.is_file() else ' and no transcription'}; is this pocketsphinx-testdata?"
            )
        texts = read_transcription(transcription)
        unknown = sorted(set(texts) - {wav.stem for wav in wavs})
        if unknown:
            raise DataError(f"{transcription}: transcripts for clips that are not in {folder}: {unknown}")
        for wav in wavs:
            clips[source.prefix + wav.stem] = (wav, source.speaker, texts.get(wav.stem))
    for raw in sorted(data.glob("*.raw")):
        clips[raw.stem] = (raw, None, None)

    utterances = []
    with atomic_folder(out) as staging:
        for name, (source_path, speaker, text) in clips.items():
            target = staging / f"{name}.wav"
            if source_path.suffix == ".raw":
                sf.write(target, np.fromfile(source_path, dtype="<i2"), SAMPLE_RATE, subtype="PCM_16")
            else:
                shutil.copyfile(source_path, target)
            info = sf.info(target)
            if info.samplerate != SAMPLE_RATE or info.channels != 1:
                raise DataError(
                    f"{source_path}: {info.samplerate} Hz, {info.channels} channels; expected "
                    f"{SAMPLE_RATE} Hz mono as every clip of pocketsphinx-testdata is"
                )
            utterances.append(
                Utterance(
                    name, out / target.name, info.frames, SAMPLE_RATE, speaker=speaker, text=text or None
                )
            )
    write_manifest(utterances, manifest, root=out)
    return GatherSummary(len(utterances), sum(1 for utt in utterances if utt.text), manifest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="where pocketsphinx-testdata is unpacked (dpkg -x)")
    parser.add_argument("out", type=Path, help="output clips folder (must not exist, or --overwrite)")
    parser.add_argument("--manifest", type=Path, help="the manifest to write (default: OUT.tsv)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT and the manifest")
    args = parser.parse_args(argv)
    try:
        summary = gather_clips(args.root, args.out, args.manifest, overwrite=args.overwrite)
    except (VQAudioError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {summary.clips} clips to {args.out} and {summary.manifest} "
        f"({summary.with_text} with the package's transcript)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
