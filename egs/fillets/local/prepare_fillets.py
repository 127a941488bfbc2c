"""Real speech that installs offline: the voice clips of the game Fish Fillets NG (Altar Interactive, 1997;
GPL since 2002, packaged by Debian as ``fillets-ng-data``, ``fillets-ng-data-cs`` and ``fillets-ng-data-nl``).

Source layout (``/usr/share/games/fillets-ng``): clips at ``sound/<level>/<lang>/<clip>.ogg`` (also
``sound/share/<group>/<lang>/``), named ``<level-prefix>-<character>-<name>`` (``let-m-divna``: character
``m``, the small fish; ``v`` the big fish; other letters are level characters; ``x`` marks effects and
one-off creatures). Subtitles are in ``script/<level>/dialogs_<lang>.lua`` (and
``script/share/*_dialogs_<lang>.lua``): ``dialogId("let-m-divna", "font_small", "<English>")`` followed
by ``dialogStr("<translation>")``.

``prepare_fillets`` converts the Czech and Dutch voices to 16 kHz FLAC in the LibriSpeech layout
(``<out>/<split>/<speaker>/<level>/<speaker>-<level>-<clip>.flac`` + ``<speaker>-<level>.trans.txt``),
speaker = ``<lang>-<character>``. The rule for what counts as speech (stated once, applied everywhere):

1. the clip has a subtitle (``dialogStr``) in its own language's dialogs: effects and music have none;
2. the subtitle is literal text: templates with ``%`` (numbers the game fills in) do not match the audio;
3. the character is known: subtitle font ``font_small`` -> ``m`` and ``font_big`` -> ``v`` (the two fish,
   one actor each per language, used also where the clip name has no character field), otherwise the
   name's second dash-field when alphabetic and not ``x``; ``font_both`` (both fish at once) is skipped;
4. the clip lasts at least ``min_seconds`` (0.5 s).

Held out: every speaker not in ``train_speakers`` (default ``cs-m`` and ``nl-v``: the small-fish voice of
one language and the big-fish voice of the other, so train and evaluation both hold both languages and both
fish). The held-out clips are divided into dev and test by level (disjoint sentences), balancing duration;
dev and test thus share voices with each other, never with training. About 1.5 h train, 0.8 h dev, 0.8 h test.

Stage 0 of ``egs/fillets/run.sh`` runs it (the recipe's local preparation, not part of the library)::

    python egs/fillets/local/prepare_fillets.py SRC OUT [--languages cs,nl] [--train-speakers cs-m,nl-v]
        [--min-seconds 0.5] [--sample-rate 16000] [--jobs 0] [--overwrite]

Exit codes: 0 success, 1 a runtime problem with the data or files (one line, no traceback unless
``--debug`` or ``VQAUDIO_DEBUG``), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import soundfile as sf
import soxr

from vqaudio.data.librispeech import write_transcripts
from vqaudio.errors import DataError, VQAudioError
from vqaudio.io.atomic import atomic_path
from vqaudio.progress import progress_bar

log = logging.getLogger(__name__)

DEFAULT_LANGUAGES = ("cs", "nl")
DEFAULT_TRAIN_SPEAKERS = ("cs-m", "nl-v")
EFFECT_CHARACTER = "x"
FONT_CHARACTERS = {"font_small": "m", "font_big": "v"}  # the subtitle font names the fish who speaks
MIXED_FONT = "font_both"
SPLITS = ("train", "dev", "test")


# --------------------------------------------------------------------------------------------------
# Clip names and dialog files
# --------------------------------------------------------------------------------------------------
class ClipName(NamedTuple):
    """The parts of a clip file name ``<prefix>-<character>-<name>``."""

    prefix: str
    character: str
    name: str


def parse_clip_name(stem: str) -> ClipName | None:
    """``"let-m-divna"`` -> ClipName("let", "m", "divna"); None when the name has fewer than three fields.

    Names such as ``help1`` or ``sp-shout_big_00`` carry no character field.
    """
    fields = stem.split("-", 2)
    if len(fields) != 3 or not all(fields):
        return None
    return ClipName(*fields)


class DialogLine(NamedTuple):
    """One ``dialogId`` entry of a dialogs file."""

    font: str  # the subtitle font names the character: font_small = small fish, font_big = big fish
    english: str  # the game's default (English) subtitle
    text: str | None  # the dialogStr translation; None when this file has none for the id


_CALL = re.compile(r"\b(dialogId|dialogStr)\s*\(")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "\n": "\n"}


class _LuaSyntaxError(Exception):
    pass


def parse_dialogs(lua_file: str | Path) -> dict[str, DialogLine]:
    """The entries of one ``dialogs_<lang>.lua`` file: {clip id: DialogLine}.

    Each ``dialogId("<id>", "<font>", "<English>")`` starts an entry; the ``dialogStr("<text>")`` after it
    gives its translation. Calls whose arguments are not string literals (loops in ``dialogs.lua``) are
    ignored; ``--`` comments are skipped; whitespace in texts is collapsed to single spaces.

    Raises:
        DataError: an unterminated string, a ``dialogId()`` without id, or a ``dialogStr`` with no
            ``dialogId`` before it; the message names the file and line.
    """
    lua_file = Path(lua_file)
    source = lua_file.read_text(encoding="utf-8", errors="replace")
    entries: dict[str, DialogLine] = {}
    current: str | None = None
    position = 0
    while (match := _CALL.search(source, position)) is not None:
        line_number = source.count("\n", 0, match.start()) + 1
        line_start = source.rfind("\n", 0, match.start()) + 1
        position = match.end()
        if "--" in source[line_start : match.start()]:
            continue  # inside a comment
        try:
            arguments, position = _string_arguments(source, position)
        except _LuaSyntaxError as exc:
            raise DataError(f"{lua_file}:{line_number}: {exc}; is this a fillets dialogs file?") from None
        if arguments is None:
            continue
        if match.group(1) == "dialogId":
            if not arguments:
                raise DataError(f"{lua_file}:{line_number}: dialogId() without a clip id")
            current = arguments[0]
            font = arguments[1] if len(arguments) > 1 else ""
            english = _clean(arguments[2]) if len(arguments) > 2 else ""
            entries[current] = DialogLine(font=font, english=english, text=None)
        else:
            if current is None:
                raise DataError(f"{lua_file}:{line_number}: dialogStr(...) without a dialogId(...) before it")
            if arguments:
                entries[current] = entries[current]._replace(text=_clean(arguments[0]) or None)
    return entries


def _clean(text: str) -> str:
    return " ".join(text.split())


def _string_arguments(source: str, position: int) -> tuple[list[str] | None, int]:
    """Parse ``"a", 'b' .. "c")`` from ``position``; None when an argument is not a string literal."""
    arguments: list[str] = []
    while True:
        position = _skip_space(source, position)
        if position < len(source) and source[position] == ")" and not arguments:
            return arguments, position + 1
        if position >= len(source) or source[position] not in "\"'":
            return None, position
        value, position = _string_literal(source, position)
        position = _skip_space(source, position)
        while source.startswith("..", position):  # concatenation of literals
            position = _skip_space(source, position + 2)
            if position >= len(source) or source[position] not in "\"'":
                return None, position
            more, position = _string_literal(source, position)
            value += more
            position = _skip_space(source, position)
        arguments.append(value)
        if position < len(source) and source[position] == ",":
            position += 1
            continue
        if position < len(source) and source[position] == ")":
            return arguments, position + 1
        return None, position


def _string_literal(source: str, position: int) -> tuple[str, int]:
    quote = source[position]
    position += 1
    pieces: list[str] = []
    while position < len(source):
        char = source[position]
        if char == quote:
            return "".join(pieces), position + 1
        if char == "\n":
            break
        if char == "\\" and position + 1 < len(source):
            following = source[position + 1]
            pieces.append(_ESCAPES.get(following, following))  # "\/" and other unknown escapes: the char
            position += 2
            continue
        pieces.append(char)
        position += 1
    raise _LuaSyntaxError("unterminated string")


def _skip_space(source: str, position: int) -> int:
    while position < len(source) and source[position] in " \t\r\n":
        position += 1
    return position


# --------------------------------------------------------------------------------------------------
# Selecting the speech clips
# --------------------------------------------------------------------------------------------------
class Clip(NamedTuple):
    """One source clip and what the rule decided about it."""

    source: Path
    language: str
    level: str  # the chapter: sound/<level>/<lang>, or the group of sound/share/<group>/<lang>
    stem: str
    speaker: str | None  # "<lang>-<character>", None when skipped
    text: str | None
    seconds: float
    skip_reason: str | None  # None: speech, kept


def clip_speaker(stem: str, line: DialogLine | None, language: str) -> tuple[str | None, str | None]:
    """Rule 3 of the module docstring: (speaker, None) or (None, the reason the speaker is unknown)."""
    if line is not None and line.font in FONT_CHARACTERS:
        return f"{language}-{FONT_CHARACTERS[line.font]}", None
    if line is not None and line.font == MIXED_FONT:
        return None, "two speakers at once"
    name = parse_clip_name(stem)
    if name is None:
        return None, "unknown speaker"
    if name.character == EFFECT_CHARACTER:
        return None, "effect or one-off creature (x)"
    if not name.character.isalpha():
        return None, "unknown speaker"
    return f"{language}-{name.character}", None


def find_fillets_data(src_root: str | Path) -> Path:
    """The folder holding ``sound/`` and ``script/``: ``src_root`` or, after ``dpkg -x``, its
    ``usr/share/games/fillets-ng``."""
    src_root = Path(src_root)
    for candidate in (src_root, src_root / "usr" / "share" / "games" / "fillets-ng"):
        if (candidate / "sound").is_dir() and (candidate / "script").is_dir():
            return candidate
    raise DataError(
        f"{src_root}: no fillets-ng data (no sound/ and script/ here or in usr/share/games/fillets-ng); "
        "extract the Debian packages with: apt-get download fillets-ng-data fillets-ng-data-cs "
        "fillets-ng-data-nl && for f in *.deb; do dpkg -x $f root; done"
    )


def scan_fillets(
    src_root: str | Path, languages: Sequence[str] = DEFAULT_LANGUAGES, min_seconds: float = 0.5
) -> list[Clip]:
    """Every voice clip of ``languages`` with the speech rule applied (reads headers, decodes nothing).

    Raises:
        DataError: no fillets data, or no clips for a language (its package is not extracted).
    """
    data = find_fillets_data(src_root)
    clips: list[Clip] = []
    for language in languages:
        level_dialogs: dict[Path, dict[str, DialogLine]] = {}
        all_dialogs: dict[str, DialogLine] = {}  # fallback for the share/ groups (black_dialogs_cs.lua, ...)
        for lua_file in sorted((data / "script").rglob(f"*dialogs_{language}.lua")):
            entries = parse_dialogs(lua_file)
            level_dialogs[lua_file] = entries
            for key, value in entries.items():
                all_dialogs.setdefault(key, value)
        sources = sorted(path for path in (data / "sound").rglob("*.ogg") if path.parent.name == language)
        if not sources:
            raise DataError(
                f"{data / 'sound'}: no {language!r} clips (sound/<level>/{language}/*.ogg); extract the "
                f"fillets-ng-data-{language} package there, or drop {language!r} from the languages"
            )
        for source in sources:
            level = source.parent.parent.name
            own = level_dialogs.get(data / "script" / level / f"dialogs_{language}.lua", {})
            line = own.get(source.stem) or all_dialogs.get(source.stem)
            info = sf.info(str(source))
            seconds = info.frames / info.samplerate
            speaker, reason = clip_speaker(source.stem, line, language)
            text = line.text if line is not None else None
            if text is None:
                reason = "no subtitle (effect or music)"
            elif "%" in text:
                reason = "subtitle is a template"
            elif seconds < min_seconds:
                reason = f"shorter than {min_seconds:g} s"
            if reason is not None:
                speaker = None
            clips.append(Clip(source, language, level, source.stem, speaker, text, seconds, reason))
    return clips


# --------------------------------------------------------------------------------------------------
# Splits, conversion, summary
# --------------------------------------------------------------------------------------------------
def assign_splits(clips: Sequence[Clip], train_speakers: Sequence[str]) -> dict[Clip, str]:
    """Kept clips -> "train" | "dev" | "test".

    Speakers in ``train_speakers`` train; every other speaker is held out. Held-out levels go to dev or
    test whole (largest first, each to the lighter split), so dev and test hold different sentences.
    """
    kept = [clip for clip in clips if clip.skip_reason is None]
    assignment = {clip: "train" for clip in kept if clip.speaker in train_speakers}
    held_out_by_level: dict[str, list[Clip]] = defaultdict(list)
    for clip in kept:
        if clip.speaker not in train_speakers:
            held_out_by_level[clip.level].append(clip)
    totals = {"dev": 0.0, "test": 0.0}
    levels = sorted(
        held_out_by_level, key=lambda level: (-sum(c.seconds for c in held_out_by_level[level]), level)
    )
    for level in levels:
        split = min(totals, key=lambda name: (totals[name], name))
        for clip in held_out_by_level[level]:
            assignment[clip] = split
        totals[split] += sum(clip.seconds for clip in held_out_by_level[level])
    return assignment


class FilletsSummary(NamedTuple):
    """What ``prepare_fillets`` wrote (also saved as ``<out>/summary.json``)."""

    hours: dict[str, dict[str, float]]  # split -> {"total", "<lang>", "<speaker>": hours}
    utterances: dict[str, int]  # split -> clip count
    skipped: dict[str, int]  # reason -> clip count
    skipped_hours: float

    def table(self) -> str:
        """Human-readable table of hours per split, language and speaker."""
        lines = []
        for split in SPLITS:
            hours = self.hours.get(split, {})
            languages = ", ".join(
                f"{key} {value:.2f} h" for key, value in hours.items() if key.isalpha() and key != "total"
            )
            speakers = ", ".join(f"{key} {value * 60:.1f} min" for key, value in hours.items() if "-" in key)
            total, count = hours.get("total", 0.0), self.utterances.get(split, 0)
            lines.append(f"{split:5s} {total:5.2f} h {count:5d} clips | {languages} | {speakers}")
        skipped = ", ".join(f"{reason}: {count}" for reason, count in sorted(self.skipped.items()))
        lines.append(f"skipped {sum(self.skipped.values())} clips, {self.skipped_hours:.2f} h ({skipped})")
        return "\n".join(lines)


def prepare_fillets(
    src_root: str | Path,
    out_root: str | Path,
    *,
    languages: Sequence[str] = DEFAULT_LANGUAGES,
    train_speakers: Sequence[str] = DEFAULT_TRAIN_SPEAKERS,
    sample_rate: int = 16000,
    min_seconds: float = 0.5,
    jobs: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> FilletsSummary:
    """Convert the fillets-ng voice clips to a speaker-held-out LibriSpeech-layout corpus.

    Args:
        src_root: the extracted Debian packages (``root`` of ``dpkg -x``) or the ``fillets-ng`` folder.
        out_root: gets ``train/``, ``dev/``, ``test/`` in the LibriSpeech layout and ``summary.json``.
        languages: sound/<level>/<lang> folders to use.
        train_speakers: ``<lang>-<character>`` voices to train on; all others are held out.
        sample_rate: output rate (soxr resampling from the clips' 11.025/22.05/44.1 kHz).
        min_seconds: shorter clips are skipped.
        jobs: conversion processes (default: the CPU count).
        overwrite: replace an ``out_root`` prepared with other settings.
        progress: show a progress bar.
    Returns:
        FilletsSummary: hours per split / language / speaker, skip counts.
    Raises:
        DataError: missing data, an ``out_root`` prepared with other settings, a split with no audio,
            unreadable clips (all named).
    """
    out_root = Path(out_root)
    settings = {
        "languages": list(languages),
        "train_speakers": sorted(train_speakers),
        "sample_rate": sample_rate,
        "min_seconds": min_seconds,
    }
    _claim_output(out_root, settings, overwrite)

    clips = scan_fillets(src_root, languages, min_seconds)
    speakers = sorted({clip.speaker for clip in clips if clip.speaker is not None})
    unknown = sorted(set(train_speakers) - set(speakers))
    if unknown:
        raise DataError(f"train speakers {unknown} have no clips; choose among {speakers} (--train-speakers)")
    assignment = assign_splits(clips, train_speakers)
    for split in SPLITS:
        if split not in assignment.values():
            raise DataError(
                f"{out_root}: the {split} split would be empty with train speakers {list(train_speakers)}; "
                "train on fewer speakers (--train-speakers) or add languages"
            )
    ordered = sorted(assignment.items(), key=lambda item: str(item[0].source))
    jobs_list = [(clip, split, _target(out_root, split, clip)) for clip, split in ordered]

    lengths = _convert_all(jobs_list, sample_rate, jobs, progress)
    _write_transcripts(out_root, jobs_list)

    hours: dict[str, defaultdict[str, float]] = {split: defaultdict(float) for split in SPLITS}
    utterances = dict.fromkeys(SPLITS, 0)
    for (clip, split, _), num_samples in zip(jobs_list, lengths, strict=True):
        hour = num_samples / sample_rate / 3600
        utterances[split] += 1
        for key in ("total", clip.language, str(clip.speaker)):
            hours[split][key] += hour
    skipped: dict[str, int] = defaultdict(int)
    for clip in clips:
        if clip.skip_reason is not None:
            skipped[clip.skip_reason] += 1
    summary = FilletsSummary(
        hours={
            split: {key: round(value, 4) for key, value in sorted(values.items(), key=_summary_order)}
            for split, values in hours.items()
        },
        utterances=utterances,
        skipped=dict(skipped),
        skipped_hours=round(sum(clip.seconds for clip in clips if clip.skip_reason is not None) / 3600, 4),
    )
    with atomic_path(out_root / "summary.json") as tmp:
        tmp.write_text(json.dumps({**summary._asdict(), "settings": settings}, indent=2) + "\n")
    return summary


def _summary_order(item: tuple[str, float]) -> tuple[int, str]:
    key = item[0]
    return (0 if key == "total" else 1 if "-" not in key else 2, key)


def _target(out_root: Path, split: str, clip: Clip) -> Path:
    assert clip.speaker is not None
    return out_root / split / clip.speaker / clip.level / f"{clip.speaker}-{clip.level}-{clip.stem}.flac"


def _claim_output(out_root: Path, settings: dict[str, Any], overwrite: bool) -> None:
    """Refuse to mix outputs of different settings; remember the settings so a rerun resumes."""
    settings_file = out_root / "settings.json"
    existing = [out_root / split for split in SPLITS if (out_root / split).exists()]
    if existing:
        previous = json.loads(settings_file.read_text()) if settings_file.is_file() else None
        if previous != settings:
            if not overwrite:
                raise DataError(
                    f"{out_root}: already holds a corpus prepared with other settings ({previous}); "
                    "pass --overwrite to replace it, or choose another output folder"
                )
            for folder in existing:
                shutil.rmtree(folder)
            (out_root / "summary.json").unlink(missing_ok=True)
    with atomic_path(settings_file) as tmp:
        tmp.write_text(json.dumps(settings, indent=2) + "\n")


def _convert_all(
    jobs_list: Sequence[tuple[Clip, str, Path]], sample_rate: int, jobs: int | None, progress: bool
) -> list[int]:
    tasks = [(str(clip.source), str(target), sample_rate) for clip, _, target in jobs_list]
    workers = max(1, jobs if jobs is not None else (os.cpu_count() or 1))
    bar = progress_bar(total=len(tasks), desc="converting clips", unit="clip", disable=not progress)
    results: list[int | str] = []
    if workers == 1:
        for task in tasks:
            results.append(_convert_clip(task))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(_convert_clip, tasks, chunksize=16):
                results.append(result)
                bar.update()
    bar.close()
    errors = [result for result in results if isinstance(result, str)]
    if errors:
        raise DataError(f"{len(errors)} clip(s) could not be converted, first: {errors[0]}")
    return [int(result) for result in results]


def _convert_clip(task: tuple[str, str, int]) -> int | str:
    """Ogg -> mono FLAC at ``sample_rate``; returns the output length, or an error message."""
    source, target, sample_rate = task
    target_path = Path(target)
    if target_path.is_file():  # resume: a finished clip (written atomically) is kept
        try:
            info = sf.info(target)
            if info.samplerate == sample_rate:
                return int(info.frames)
        except RuntimeError:
            pass
    try:
        audio, rate = sf.read(source, dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises several types
        return f"{source}: {exc}"
    mono = audio.mean(axis=1)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    mono = np.clip(mono, -1.0, 1.0)  # resampling can overshoot full scale by a hair
    with atomic_path(target_path) as tmp:
        sf.write(str(tmp), mono, sample_rate, subtype="PCM_16", format="FLAC")
    return int(mono.shape[0])


def _write_transcripts(out_root: Path, jobs_list: Sequence[tuple[Clip, str, Path]]) -> None:
    chapters: dict[Path, list[str]] = defaultdict(list)
    for clip, _, target in jobs_list:
        chapters[target.parent].append(f"{target.stem} {clip.text}")
    write_transcripts({folder: sorted(lines) for folder, lines in chapters.items()})


# --------------------------------------------------------------------------------------------------
# Command line (was ``vqaudio prepare-fillets``)
# --------------------------------------------------------------------------------------------------
DESCRIPTION = (
    "Convert the Fish Fillets NG voice clips (Czech + Dutch, ~3 h) to a 16 kHz speaker-held-out corpus "
    "in the LibriSpeech layout. "
    "Speech = clips with a literal subtitle in their own language, a known speaker (<lang>-<character>) and "
    "at least --min-seconds; effects, music and one-off creatures are skipped and counted. The voices not "
    "in --train-speakers go to dev/test, divided by level. Prints hours per split, language and speaker "
    "and saves them in OUT/summary.json."
)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, prepare the corpus, print its table; returns the exit code (0, 1, or 2 via argparse)."""
    parser = argparse.ArgumentParser(prog="prepare_fillets.py", description=DESCRIPTION)
    parser.add_argument(
        "src",
        type=Path,
        help="Extracted fillets-ng-data(-cs,-nl) packages (dpkg -x root) or the fillets-ng folder.",
    )
    parser.add_argument(
        "out", type=Path, help="Output folder: train/, dev/, test/ in the LibriSpeech layout + summary.json."
    )
    parser.add_argument(
        "--languages", default="cs,nl", help="Comma-separated voice languages (default cs,nl)."
    )
    parser.add_argument(
        "--train-speakers",
        default="cs-m,nl-v",
        help="Comma-separated <lang>-<character> voices to train on; all others are held out (default cs-m,nl-v).",
    )
    parser.add_argument("--min-seconds", type=float, default=0.5, help="Skip shorter clips (default 0.5).")
    parser.add_argument("--sample-rate", type=int, default=16000, help="Output sample rate (default 16000).")
    parser.add_argument(
        "--jobs", "-j", type=int, default=0, help="Conversion processes (0: one per CPU, the default)."
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="Replace an OUT prepared with other settings."
    )
    parser.add_argument("--debug", action="store_true", help="Show full tracebacks on errors.")
    parser.add_argument("--quiet", "-q", action="store_true", help="Only warnings and errors on the console.")
    args = parser.parse_args(argv)
    if args.min_seconds < 0:
        parser.error(f"--min-seconds must be >= 0, got {args.min_seconds}")
    if args.sample_rate < 1000:
        parser.error(f"--sample-rate must be >= 1000, got {args.sample_rate}")
    if args.jobs < 0:
        parser.error(f"--jobs must be >= 0, got {args.jobs}")
    languages = _split_list(parser, "--languages", args.languages)
    train_speakers = _split_list(parser, "--train-speakers", args.train_speakers)

    debug = args.debug or bool(os.environ.get("VQAUDIO_DEBUG"))
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(message)s" if not debug else "%(asctime)s %(name)s %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        summary = prepare_fillets(
            args.src,
            args.out,
            languages=languages,
            train_speakers=train_speakers,
            sample_rate=args.sample_rate,
            min_seconds=args.min_seconds,
            jobs=args.jobs or None,
            overwrite=args.overwrite,
        )
    except (VQAudioError, ValueError, FileExistsError, FileNotFoundError) as exc:  # as vqaudio.cli.main
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary.table())
    print(f"summary: {args.out / 'summary.json'}")
    return 0


def _split_list(parser: argparse.ArgumentParser, option: str, value: str) -> list[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        parser.error(f"{option}: expected a comma-separated list, got {value!r}")
    return items


if __name__ == "__main__":
    sys.exit(main())
