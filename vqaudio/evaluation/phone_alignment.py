"""Phone alignments of transcribed English speech: where each phone of the transcript is, offline.

Forced alignment with pocketsphinx (Huggins-Daines et al., 2006; its wheel ships the CMU US English acoustic
model, the CMU pronouncing dictionary and their phone set): given the words, the decoder first finds the
words' timing (``set_align_text``, one pass), then the phones' and HMM states' in a second pass
(``set_alignment``). Phones are ARPAbet without stress (39 phones, ``PHONES``) and ``SIL`` for silence,
including the optional pauses the aligner inserts between words. Where a word has several pronunciations
the aligner picks the one that fits the audio.

An alignment folder (``vqaudio align MANIFEST OUT``, ``align_corpus``) holds::

    OUT/
      manifest.tsv   the aligned utterances, a vqaudio manifest (id, path, samples, sample_rate, speaker, text)
      phones.tsv     utt_id  start  end  phone  word  (header line; seconds; one row per phone segment, in
                     order; an utterance's segments are contiguous and cover [0, its duration]; silence is
                     phone SIL, word <sil>; a word's alternative pronunciation marker "(2)" is dropped)
      frames.tsv     utt_id  num_frames  labels  (header line; labels: num_frames phones separated by spaces,
                     frame m covering [m / frame_rate, (m + 1) / frame_rate) s, see ``frame_labels``)
      meta.json      format "vqaudio-phone-alignment", format_version, aligner, frame_rate, phones, silence,
                     source, utterances, seconds, skipped (id and reason of each utterance not aligned)

Times are pocketsphinx's: 10 ms frames, so boundaries fall on a 10 ms grid (the last segment is stretched to
the end of the clip, which the aligner's last frame may fall short of).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from vqaudio._version import __version__
from vqaudio.data import load_corpus
from vqaudio.data.manifest import read_manifest, write_manifest
from vqaudio.data.utterance import Utterance
from vqaudio.errors import AudioError, DataError, InputError
from vqaudio.evaluation.voice import words
from vqaudio.io.atomic import atomic_folder, atomic_path, check_output
from vqaudio.io.audio import load_audio
from vqaudio.io.inputs import read_text
from vqaudio.optional import require
from vqaudio.progress import progress_bar

log = logging.getLogger(__name__)

ALIGNMENT_FORMAT = "vqaudio-phone-alignment"
ALIGNMENT_FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.tsv"
PHONES_FILE = "phones.tsv"
FRAMES_FILE = "frames.tsv"
META_FILE = "meta.json"
ALIGNMENT_FILES = (MANIFEST_FILE, PHONES_FILE, FRAMES_FILE, META_FILE)

SAMPLE_RATE = 16000  # pocketsphinx's en-us acoustic model
ALIGNER_FRAME_SECONDS = 0.01  # pocketsphinx's frame step
DEFAULT_FRAME_RATE = 50.0  # the embedded tokenizer's
SILENCE = "SIL"
SILENCE_WORD = "<sil>"
# the CMU dictionary's phones (ARPAbet without stress), in its order
PHONES = (
    "AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH"
).split()
PHONE_SET = (*PHONES, SILENCE)
_ALTERNATIVE = re.compile(r"\(\d+\)$")  # "was(2)": the dictionary's second pronunciation of "was"
_TIME_DECIMALS = 5
PAD_SECONDS = 0.1  # of silence added at both ends before aligning
DITHER = 4 / 32768  # standard deviation of the noise added before aligning (4 LSBs of 16-bit audio)


class AlignmentError(DataError):
    """An utterance that cannot be aligned: words missing from the dictionary, or no alignment found."""


class PhoneSegment(NamedTuple):
    """One phone of an utterance: ``phone`` (one of ``PHONE_SET``) from ``start`` to ``end`` seconds."""

    start: float
    end: float
    phone: str
    word: str  # the word it belongs to, ``SILENCE_WORD`` for silence


class PhoneAlignments(NamedTuple):
    """An alignment folder, read back (``read_alignments``).

    utterances: the aligned utterances (their audio and transcript), sorted by id.
    segments: utterance id -> its phone segments, in order.
    meta: meta.json.
    """

    utterances: list[Utterance]
    segments: dict[str, list[PhoneSegment]]
    meta: dict[str, Any]


class AlignSummary(NamedTuple):
    """What ``align_corpus`` wrote."""

    aligned: int
    seconds: float
    untranscribed: list[str]  # ids of utterances without a transcript (nothing to align)
    skipped: list[tuple[str, str]]  # (id, reason) of utterances that failed (--skip-bad)
    out: Path


# --------------------------------------------------------------------------------------------------
# One utterance
# --------------------------------------------------------------------------------------------------
class PhoneAligner:
    """pocketsphinx's forced aligner with its US English model; one decoder, reused for every utterance.

    Raises:
        MissingDependency: pocketsphinx is not installed (the ``voice`` extra).
    """

    def __init__(self) -> None:
        pocketsphinx = require("pocketsphinx", "voice", "phone alignment")
        # The default model is the wheel's en-us one; logfn keeps its log off our stderr. Without the bestpath
        # rescoring, which the aligner's state search warns about ("impossible duration ... consider disabling
        # bestpath search"), one English test clip could not be aligned at all.
        self._decoder = pocketsphinx.Decoder(samprate=SAMPLE_RATE, bestpath=False, logfn=os.devnull)
        self.version = _package_version("pocketsphinx")

    @property
    def name(self) -> str:
        return f"pocketsphinx {self.version} (en-us acoustic model, cmudict-en-us)"

    def missing_words(self, text: str) -> list[str]:
        """The words of ``text`` (after ``voice.words``) that the dictionary does not hold, in order."""
        return [word for word in dict.fromkeys(words(text)) if self._decoder.lookup_word(word) is None]

    def align(self, audio: np.ndarray, text: str) -> list[PhoneSegment]:
        """The phones of ``text`` in ``audio``.

        Args:
            audio: [T] float audio at ``SAMPLE_RATE`` (16 kHz).
            text: what is said; normalised with ``voice.words`` (lower case, punctuation dropped).
        Returns:
            contiguous segments covering [0, T / SAMPLE_RATE] seconds, silences merged into one ``SIL``.
        Raises:
            AlignmentError: no words, words missing from the dictionary (named), or no alignment found.
        """
        sentence = words(text)
        if not sentence:
            raise AlignmentError("the transcript has no words")
        missing = self.missing_words(text)
        if missing:
            raise AlignmentError(
                f"words not in pocketsphinx's dictionary: {', '.join(missing[:10])}"
                + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            )
        # The aligner's second pass needs silence before the first word and after the last one (a clip that
        # starts on a phone fails with "impossible duration"): pad both ends, shift the times back below.
        # Digital silence (runs of exact zeros, as synthesisers write) derails the aligner's features: half of
        # a test set of espeak-ng sentences lost their last words. A seeded dither of a few LSBs (-78 dBFS)
        # fixes that and keeps the result the same on every run.
        pad = np.zeros(round(PAD_SECONDS * SAMPLE_RATE), dtype=np.float32)
        padded = np.concatenate([pad, np.asarray(audio, dtype=np.float32), pad])
        noise = np.random.default_rng(0).standard_normal(padded.shape[0], dtype=np.float32)
        padded += DITHER * noise
        pcm = np.round(np.clip(padded, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        decoder = self._decoder
        # The feature front-end adapts (its cepstral mean) from utterance to utterance: reset it, so that an
        # utterance's alignment is that of a fresh decoder, whatever was aligned before it.
        decoder.reinit_feat()
        try:
            decoder.set_align_text(" ".join(sentence))
            self._decode(pcm)  # first pass: the words
            hypothesis = decoder.hyp()
            if hypothesis is None:
                raise AlignmentError("the aligner found no path through the words (audio and text differ?)")
            reached = words(hypothesis.hypstr)
            if reached != sentence:  # the search ended inside the sentence: the rest would be misplaced
                raise AlignmentError(
                    f"the aligner reached only {len(reached)} of the transcript's {len(sentence)} words "
                    f"(stopped after {' '.join(reached[-3:]) or 'none'!r}; audio and text differ?)"
                )
            decoder.set_alignment()
            self._decode(pcm)  # second pass: phones and states within the words
            alignment = decoder.get_alignment()
        except RuntimeError as exc:
            raise AlignmentError(f"pocketsphinx failed ({str(exc).strip() or type(exc).__name__})") from exc
        if alignment is None:
            raise AlignmentError("the aligner returned no alignment")
        raw = [
            (phone.start, phone.start + phone.duration, phone.name, _ALTERNATIVE.sub("", word.name))
            for word in alignment
            for phone in word
        ]
        return _clean_segments(raw, audio.shape[-1] / SAMPLE_RATE, offset=pad.shape[0] / SAMPLE_RATE)

    def _decode(self, pcm: bytes) -> None:
        self._decoder.start_utt()
        self._decoder.process_raw(pcm, full_utt=True)
        self._decoder.end_utt()


def _clean_segments(
    raw: Sequence[tuple[int, int, str, str]], duration: float, offset: float = 0.0
) -> list[PhoneSegment]:
    """Aligner frames (of audio starting ``offset`` s before the clip) -> contiguous segments in seconds
    covering [0, duration]: silence words and fillers become SIL (adjacent ones merged), a gap becomes SIL,
    the last segment ends at ``duration``."""
    segments: list[PhoneSegment] = []
    cursor = 0.0
    for start_frame, end_frame, phone, word in sorted(raw):
        start = min(round(start_frame * ALIGNER_FRAME_SECONDS - offset, _TIME_DECIMALS), duration)
        end = min(round(end_frame * ALIGNER_FRAME_SECONDS - offset, _TIME_DECIMALS), duration)
        if phone not in PHONES or word.startswith("<") or word.startswith("["):
            phone, word = SILENCE, SILENCE_WORD
        start = max(start, cursor)
        if end <= start:
            continue
        if start > cursor:
            segments = _append(segments, PhoneSegment(cursor, start, SILENCE, SILENCE_WORD))
        segments = _append(segments, PhoneSegment(start, end, phone, word))
        cursor = end
    if not any(segment.phone != SILENCE for segment in segments):
        raise AlignmentError("the alignment holds no phone of the transcript")
    if cursor < duration:  # the aligner's last frame falls short of the clip's end
        last = segments[-1]
        if last.phone == SILENCE or duration - cursor <= 2 * ALIGNER_FRAME_SECONDS:
            segments[-1] = last._replace(end=duration)
        else:
            segments.append(PhoneSegment(cursor, duration, SILENCE, SILENCE_WORD))
    return segments


def _append(segments: list[PhoneSegment], segment: PhoneSegment) -> list[PhoneSegment]:
    if segments and segment.phone == SILENCE and segments[-1].phone == SILENCE:
        segments[-1] = segments[-1]._replace(end=segment.end)
    else:
        segments.append(segment)
    return segments


def frame_labels(segments: Sequence[PhoneSegment], num_frames: int, frame_rate: float) -> list[str]:
    """One phone per frame: the phone that covers most of frame m = [m / frame_rate, (m + 1) / frame_rate).

    On a tie (a 20 ms frame split evenly between two 10 ms-grid phones) the later phone wins; a frame no
    segment reaches (past the end of the audio) is ``SIL``.

    Args:
        segments: contiguous, ordered phone segments (``PhoneAligner.align``).
        num_frames: frames to label, e.g. a tokenizer's ``ceil(T / hop_length)``.
        frame_rate: frames per second.
    Returns:
        ``num_frames`` phone labels.
    """
    if num_frames < 0 or not frame_rate > 0:
        raise ValueError(
            f"frame_labels needs num_frames >= 0 and frame_rate > 0, got {num_frames}, {frame_rate}"
        )
    labels = []
    first = 0
    for frame in range(num_frames):
        low, high = frame / frame_rate, (frame + 1) / frame_rate
        while first < len(segments) and segments[first].end <= low:
            first += 1
        best, best_overlap = SILENCE, 0.0
        index = first
        while index < len(segments) and segments[index].start < high:
            overlap = min(high, segments[index].end) - max(low, segments[index].start)
            if overlap > 0 and overlap >= best_overlap - 1e-9:  # the later one on a tie
                best, best_overlap = segments[index].phone, overlap
            index += 1
        labels.append(best)
    return labels


def num_frames_at(num_samples: int, sample_rate: int, frame_rate: float) -> int:
    """Frames of ``num_samples`` samples at ``frame_rate``: ceil, at least 1 (as a tokenizer counts them)."""
    hop = sample_rate / frame_rate
    return max(1, math.ceil(num_samples / hop - 1e-9))


# --------------------------------------------------------------------------------------------------
# A corpus -> an alignment folder
# --------------------------------------------------------------------------------------------------
def align_corpus(
    source: str | Path,
    out: str | Path,
    frame_rate: float = DEFAULT_FRAME_RATE,
    skip_bad: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> AlignSummary:
    """Align every transcribed utterance of a corpus and write the alignment folder ``out`` atomically.

    Utterances without a transcript are left out (listed in meta.json and in the summary): there is nothing
    to align. An utterance whose words are not in the dictionary, that the aligner cannot align, or whose audio
    cannot be read stops the run, unless ``skip_bad``: then it is left out with a warning and listed.

    Args:
        source: a corpus ``vqaudio.data.load_corpus`` reads with transcripts (a manifest with a text column,
            a LibriSpeech tree).
        out: the alignment folder (see the module docstring).
        frame_rate: of frames.tsv (the probe computes labels at its tokenizer's own rate from phones.tsv).
        skip_bad: leave out (and list) utterances that cannot be aligned or read.
        overwrite: replace an existing ``out``.
        progress: a progress bar over utterances.
    Raises:
        FileExistsError: ``out`` exists and ``overwrite`` is False (before any work).
        MissingDependency: no pocketsphinx.
        AlignmentError, AudioError: an utterance that cannot be aligned or read (without ``skip_bad``).
        DataError: no transcribed utterance, or none aligned.
    """
    out = Path(out)
    if not (isinstance(frame_rate, (int, float)) and math.isfinite(frame_rate) and frame_rate > 0):
        raise InputError(f"frame_rate must be a positive number of frames per second, got {frame_rate!r}")
    check_output(
        out, overwrite=overwrite, folder=True, replaceable=_is_alignment_file, what="`vqaudio align`"
    )
    corpus = load_corpus(source)
    transcribed = [utt for utt in corpus if utt.text and words(utt.text)]
    untranscribed = [utt.id for utt in corpus if not (utt.text and words(utt.text))]
    if not transcribed:
        raise DataError(
            f"{source}: none of its {len(corpus)} utterances has a transcript; alignment needs the words "
            "(a manifest with a text column, or a LibriSpeech tree)"
        )
    aligner = PhoneAligner()
    aligned: list[tuple[Utterance, int, list[PhoneSegment]]] = []  # utterance, samples at 16 kHz, segments
    skipped: list[tuple[str, str]] = []
    bar = progress_bar(transcribed, desc="align", unit="utt", disable=not progress)
    for utterance in bar:
        try:
            audio = load_audio(utterance.path, SAMPLE_RATE).numpy()
            segments = aligner.align(audio, utterance.text or "")
        except (AlignmentError, AudioError) as exc:
            reason = exc.reason if isinstance(exc, AudioError) else str(exc)
            if not skip_bad:
                if isinstance(exc, AudioError):
                    raise
                raise AlignmentError(
                    f"utterance {utterance.id} ({utterance.path}): {reason}; fix its transcript, or pass "
                    "--skip-bad to leave it out"
                ) from exc
            log.warning("skipping utterance %s (--skip-bad): %s", utterance.id, reason)
            skipped.append((utterance.id, reason))
            continue
        aligned.append((utterance, audio.shape[-1], segments))
    bar.close()
    if not aligned:
        raise DataError(f"{source}: no utterance could be aligned ({len(skipped)} skipped); see the warnings")
    seconds = sum(samples for _, samples, _ in aligned) / SAMPLE_RATE
    meta = {
        "format": ALIGNMENT_FORMAT,
        "format_version": ALIGNMENT_FORMAT_VERSION,
        "vqaudio_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "aligner": aligner.name,
        "aligner_frame_seconds": ALIGNER_FRAME_SECONDS,
        "frame_rate": frame_rate,
        "phones": list(PHONE_SET),
        "silence": SILENCE,
        "source": str(source),
        "utterances": len(aligned),
        "seconds": seconds,
        "untranscribed": untranscribed,
        "skipped": [{"id": utt_id, "reason": reason} for utt_id, reason in skipped],
    }
    with atomic_folder(out, overwrite=overwrite) as staging:
        write_manifest([utterance for utterance, _, _ in aligned], staging / MANIFEST_FILE)
        phone_rows = ["utt_id\tstart\tend\tphone\tword"]
        frame_rows = ["utt_id\tnum_frames\tlabels"]
        for utterance, samples, segments in aligned:
            phone_rows += [
                f"{utterance.id}\t{_seconds(s.start)}\t{_seconds(s.end)}\t{s.phone}\t{s.word}"
                for s in segments
            ]
            count = num_frames_at(samples, SAMPLE_RATE, frame_rate)
            frame_rows.append(
                f"{utterance.id}\t{count}\t{' '.join(frame_labels(segments, count, frame_rate))}"
            )
        (staging / PHONES_FILE).write_text("\n".join(phone_rows) + "\n", encoding="utf-8")
        (staging / FRAMES_FILE).write_text("\n".join(frame_rows) + "\n", encoding="utf-8")
        with atomic_path(staging / META_FILE) as tmp:  # last: its presence marks a complete folder
            tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return AlignSummary(len(aligned), seconds, untranscribed, skipped, out)


def _is_alignment_file(relative: Path) -> bool:
    return str(relative) in ALIGNMENT_FILES


def _seconds(value: float) -> str:
    return f"{value:.{_TIME_DECIMALS}f}".rstrip("0").rstrip(".") or "0"


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown version"


# --------------------------------------------------------------------------------------------------
# Reading an alignment folder
# --------------------------------------------------------------------------------------------------
def read_alignments(folder: str | Path) -> PhoneAlignments:
    """Read an alignment folder written by ``align_corpus`` (``vqaudio align``).

    Raises:
        DataError: not an alignment folder (named with the fix), a malformed row (file and line), an
            utterance of the manifest without phones, phones of an utterance not in the manifest.
    """
    folder = Path(folder)
    meta_path = folder / META_FILE
    if not folder.is_dir() or not meta_path.is_file():
        hint = " (a manifest: align it first with `vqaudio align`)" if folder.suffix == ".tsv" else ""
        raise DataError(
            f"{folder} is not a phone alignment folder: no {META_FILE}{hint}; make one with "
            "`vqaudio align MANIFEST OUT`"
        )
    try:
        meta = json.loads(read_text(meta_path, DataError, "alignment metadata"))
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{meta_path}: not valid JSON ({exc.msg}, line {exc.lineno}); re-run vqaudio align"
        ) from exc
    if not isinstance(meta, dict) or meta.get("format") != ALIGNMENT_FORMAT:
        raise DataError(f"{meta_path}: not a {ALIGNMENT_FORMAT!r} description; re-run vqaudio align")
    if meta.get("format_version") != ALIGNMENT_FORMAT_VERSION:
        raise DataError(
            f"{meta_path}: format version {meta.get('format_version')!r}, this vqaudio reads "
            f"{ALIGNMENT_FORMAT_VERSION}; re-run vqaudio align"
        )
    utterances = read_manifest(folder / MANIFEST_FILE)
    segments = read_phones(folder / PHONES_FILE)
    ids = {utt.id for utt in utterances}
    without = sorted(ids - set(segments))
    unknown = sorted(set(segments) - ids)
    if without or unknown:
        raise DataError(
            f"{folder}: {PHONES_FILE} and {MANIFEST_FILE} disagree (no phones for {without[:3]}, phones of "
            f"unlisted utterances {unknown[:3]}); re-run vqaudio align"
        )
    return PhoneAlignments(utterances, segments, meta)


def read_phones(path: str | Path) -> dict[str, list[PhoneSegment]]:
    """phones.tsv -> utterance id -> its segments in order (see the module docstring)."""
    path = Path(path)
    lines = read_text(path, DataError, "phone segments").split("\n")
    if not lines or lines[0].rstrip("\r").split("\t") != ["utt_id", "start", "end", "phone", "word"]:
        raise DataError(f"{path}:1: expected the header 'utt_id start end phone word' (tab-separated)")
    segments: dict[str, list[PhoneSegment]] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split("\t")
        try:
            utt_id, start, end, phone, word = fields
            segment = PhoneSegment(float(start), float(end), phone, word)
        except ValueError:
            raise DataError(
                f"{path}:{number}: expected utt_id, start, end, phone, word with numeric times, got {fields}"
            ) from None
        previous = segments.setdefault(utt_id, [])
        if not (0 <= segment.start < segment.end) or (
            previous and abs(previous[-1].end - segment.start) > 1e-6
        ):
            raise DataError(
                f"{path}:{number}: segment {segment.start}-{segment.end} s of {utt_id} is empty or does not "
                "start where the one before ends"
            )
        if phone not in PHONE_SET:
            raise DataError(
                f"{path}:{number}: unknown phone {phone!r}; expected one of {' '.join(PHONE_SET)}"
            )
        previous.append(segment)
    return segments
