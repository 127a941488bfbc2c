"""``vqaudio prepare``: a corpus -> manifest TSVs with lengths, speakers, transcripts, and held-out splits.

Held-out splits hold out *whole speakers* (as in the official LibriSpeech dev/test splits), so a codec is
evaluated on voices it never trained on: a tokenizer that only works on its training speakers looks good on
an utterance-level split and fails in use.
"""

from __future__ import annotations

import logging
import os
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from vqaudio.data.corpus import Utterance, fill_headers, load_corpus, sort_and_check
from vqaudio.data.manifest import write_manifest
from vqaudio.errors import DataError, InputError
from vqaudio.io.atomic import OutputFiles, check_output

log = logging.getLogger(__name__)

HELD_OUT_TOLERANCE = 1.25  # a speaker may push a held-out split up to 25% past its target


class Splits(NamedTuple):
    """A corpus divided by speaker."""

    train: list[Utterance]
    dev: list[Utterance]
    test: list[Utterance]


class SplitStats(NamedTuple):
    """Size of one manifest."""

    utterances: int
    speakers: int  # distinct known speakers
    hours: float


class PrepareResult(NamedTuple):
    """What ``prepare_manifests`` wrote."""

    manifests: dict[str, Path]  # "all" | "train" | "dev" | "test" -> manifest path
    stats: dict[str, SplitStats]  # same keys

    def table(self) -> str:
        """One line per manifest: name, utterances, speakers, hours, path."""
        return "\n".join(
            f"{name:5s} {stats.utterances:7d} utts {stats.speakers:5d} speakers {stats.hours:8.2f} h  "
            f"{self.manifests[name]}"
            for name, stats in self.stats.items()
        )


def split_by_speaker(utterances: Sequence[Utterance], dev: float, test: float, seed: int = 0) -> Splits:
    """Hold out whole speakers for dev and test.

    Speakers are visited in a seeded random order; each held-out split takes speakers until it holds ``dev``
    (``test``) of the total duration, skipping a speaker that would overshoot the target by more than 25%
    (if every speaker is too big, the smallest one is taken, so a requested split is never empty). The
    remaining speakers train. Utterances without a speaker count as their own speaker (split by file).
    Durations come from ``num_samples / sample_rate``; where unknown, every utterance weighs the same.

    Args:
        utterances: the corpus.
        dev, test: fractions of the total duration to hold out, each in [0, 1), sum < 1.
        seed: the speaker order.
    Returns:
        Splits(train, dev, test), each sorted by id.
    Raises:
        ValueError: fractions out of range.
        DataError: too few speakers to hold out the requested splits and keep some for training.
    """
    if not (0 <= dev < 1 and 0 <= test < 1 and dev + test < 1):
        raise InputError(f"held-out fractions must be in [0, 1) with sum < 1, got dev={dev}, test={test}")
    known = all(utt.seconds is not None for utt in utterances)
    groups: dict[str, list[Utterance]] = defaultdict(list)
    for utt in utterances:
        groups[utt.speaker if utt.speaker is not None else f"\0{utt.id}"].append(utt)
    if any(key.startswith("\0") for key in groups) and (dev > 0 or test > 0):
        log.warning("some utterances have no speaker: each is held out on its own (split by file)")
    weight = {
        key: sum((utt.seconds or 0.0) if known else 1.0 for utt in group) for key, group in groups.items()
    }
    total = sum(weight.values())
    order = sorted(groups)
    random.Random(seed).shuffle(order)

    chosen: dict[str, list[str]] = {"dev": [], "test": []}
    for split, fraction in (("dev", dev), ("test", test)):
        if fraction <= 0:
            continue
        target = fraction * total
        held = 0.0
        free = [key for key in order if key not in chosen["dev"] + chosen["test"]]
        for key in free:
            if held >= target:
                break
            if held + weight[key] <= target * HELD_OUT_TOLERANCE:
                chosen[split].append(key)
                held += weight[key]
        if not chosen[split] and free:
            chosen[split].append(min(free, key=lambda key: (weight[key], key)))
    train_keys = [key for key in order if key not in chosen["dev"] and key not in chosen["test"]]
    if (dev > 0 and not chosen["dev"]) or (test > 0 and not chosen["test"]) or not train_keys:
        raise DataError(
            f"cannot hold out whole speakers for dev={dev} and test={test} and keep speakers for training: "
            f"the corpus has {len(groups)} speaker(s); lower --dev/--test, or pass --dev 0 --test 0"
        )

    def gather(keys: Sequence[str]) -> list[Utterance]:
        return sorted((utt for key in keys for utt in groups[key]), key=lambda utt: utt.id)

    return Splits(train=gather(train_keys), dev=gather(chosen["dev"]), test=gather(chosen["test"]))


def split_manifest_path(manifest: str | Path, split: str) -> Path:
    """``data/manifest.tsv``, "dev" -> ``data/manifest.dev.tsv``."""
    manifest = Path(manifest)
    return manifest.with_name(f"{manifest.stem}.{split}{manifest.suffix}")


def prepare_manifests(
    source: str | Path | Sequence[str | Path],
    manifest: str | Path,
    *,
    dev: float = 0.0,
    test: float = 0.0,
    seed: int = 0,
    skip_bad: bool = False,
    progress: bool = True,
    overwrite: bool = False,
) -> PrepareResult:
    """Write ``manifest`` (every utterance) and, when ``dev``/``test`` > 0, ``<stem>.train/.dev/.test.tsv``.

    Args:
        source: anything ``load_corpus`` reads (LibriSpeech tree, audio folder, list file, manifest), or
            several of them (e.g. LibriSpeech train-clean-100 and train-clean-360), merged.
        manifest: the output ``.tsv``.
        dev, test: fractions of the total duration held out as whole speakers (see ``split_by_speaker``).
        seed: the speaker order of the split.
        skip_bad: drop unreadable or empty files (counted and listed in the log) instead of failing.
        progress: show a progress bar while reading headers.
        overwrite: replace an existing manifest and its splits (all together; a split this run does not
            write is removed, so no sibling of an earlier run is left beside the new manifest).
    Returns:
        PrepareResult with the manifest paths and their sizes.
    Raises:
        DataError / AudioError: see ``load_corpus``, ``fill_headers``, ``split_by_speaker``.
        FileExistsError: the manifest or one of its splits exists and ``overwrite`` is False (checked
            before reading any audio); OutputError: the folder cannot be written.
    """
    manifest = Path(manifest)
    if manifest.suffix.lower() != ".tsv":
        raise DataError(f"{manifest}: a manifest must end in .tsv (that is how vqaudio recognises it)")
    siblings = [split_manifest_path(manifest, name) for name in ("train", "dev", "test")]
    for output in (manifest, *siblings):
        check_output(output, overwrite=overwrite)
    sources = [Path(source)] if isinstance(source, (str, Path)) else [Path(item) for item in source]
    if not sources:
        raise DataError("prepare needs at least one corpus source")
    corpus = [utt for item in sources for utt in load_corpus(item)]
    where = ", ".join(str(item) for item in sources)
    utterances = fill_headers(sort_and_check(corpus, where=where), skip_bad=skip_bad, progress=progress)
    if not utterances:
        raise DataError(f"{where}: no readable audio left after skipping unreadable files")
    # paths are written relative to the source folder(s), so the manifest reads as a map of the corpus
    root = None
    if all(item.is_dir() for item in sources):
        root = Path(os.path.commonpath([item.resolve() for item in sources]))
    outputs: dict[str, list[Utterance]] = {"all": utterances}
    if dev > 0 or test > 0:
        splits = split_by_speaker(utterances, dev=dev, test=test, seed=seed)
        outputs.update({name: part for name, part in splits._asdict().items() if part})
    manifests = {name: manifest if name == "all" else split_manifest_path(manifest, name) for name in outputs}
    stale = [path for path in siblings if path not in manifests.values()]
    stats: dict[str, SplitStats] = {}
    # all manifests are replaced together, or none (vqaudio.io.atomic.OutputFiles)
    with OutputFiles(list(manifests.values()), overwrite=overwrite, remove=stale) as files:
        for name, part in outputs.items():
            write_manifest(part, files.stage(manifests[name]), root=root)
    for name, part in outputs.items():
        stats[name] = SplitStats(
            utterances=len(part),
            speakers=len({utt.speaker for utt in part if utt.speaker is not None}),
            hours=sum(utt.seconds or 0.0 for utt in part) / 3600,
        )
    return PrepareResult(manifests=manifests, stats=stats)
