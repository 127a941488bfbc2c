"""The phonetic probe's report: probe.json (every number), probe.md (tables), probe.png (the figure).

``vqaudio probe`` writes them as a folder of their own; ``vqaudio eval --probe ALIGNMENTS`` puts the same
section, figure and numbers into the eval report (``report.md``, ``phonetic_probe.png``, ``report.json``'s
``phonetic_probe``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vqaudio._version import __version__
from vqaudio.evaluation.phonetic_probe import (
    HELDOUT_FOLDS,
    KMEANS_OTHER_SPEECH,
    ProbeOptions,
    ProbeResult,
    run_probe,
)
from vqaudio.io.atomic import atomic_folder, atomic_path, check_output

if TYPE_CHECKING:
    from vqaudio.codec.tokenizer import Tokenizer

PROBE_FORMAT = "vqaudio-phonetic-probe"
PROBE_FORMAT_VERSION = 1
PROBE_PLOT = "probe.png"
PROBE_FILES = ("probe.json", "probe.md", PROBE_PLOT)
RUN_LENGTH_TARGET = 2.0  # frames: issue 26's target for the first codebook


def probe_dict(result: ProbeResult) -> dict[str, Any]:
    """Every number of the probe as JSON-ready data (NaN becomes null when written)."""
    return {
        "format": PROBE_FORMAT,
        "format_version": PROBE_FORMAT_VERSION,
        "vqaudio_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "alignments": result.source,
        "aligner": result.aligner,
        "model": result.model,
        "options": {**asdict(result.options), "heldout_folds": HELDOUT_FOLDS},
        "utterances": result.utterances,
        "frames": result.frames,
        "seconds": result.seconds,
        "frame_rate": result.frame_rate,
        "phone_entropy_bits": result.phone_entropy_bits,
        "phone_counts": result.phone_counts,
        "codes": [_finite(scores._asdict()) for scores in result.codes],
        "linear_probes": [_finite(scores._asdict()) for scores in result.linear],
        "majority_accuracy": result.majority_accuracy,
        "split": result.split,
        "notes": result.notes,
        "kmeans_fit": result.kmeans_fit,
    }


def summary_sentence(result: ProbeResult) -> str:
    """The first codebook against the same-K baselines, in one sentence (empty without a codebook 1)."""
    try:
        first = result.row("codebook 1")
    except KeyError:
        return ""
    k = first.num_codes
    parts = [f"First codebook: PNMI {first.pnmi:.3f} ({1 - first.pnmi:.3f} short of 1)"]
    for prefix, label in (
        ("k-means log-mel", "k-means on log-mel"),
        (KMEANS_OTHER_SPEECH, "k-means on log-mel of other speech"),
        ("random", "random codes"),
    ):
        try:
            row = result.row(f"{prefix}, K={k}")
        except KeyError:
            continue
        parts.append(f"{label} with the same K: {row.pnmi:.3f}")
    text = "; ".join(parts)
    return (
        f"{text}. Held-out phone purity {first.heldout_phone_purity:.3f}. Mean run length "
        f"{first.mean_run_length:.2f} frames (target >= {RUN_LENGTH_TARGET:g}), {first.dedup_rate:.1f} tokens/s "
        "after collapsing repeats."
    )


def probe_markdown(result: ProbeResult, heading: str = "#", plot: str | None = PROBE_PLOT) -> list[str]:
    """The probe's section as markdown lines; ``heading`` is the level of its title ("#" or "##")."""
    split = result.split
    lines = [
        f"{heading} Phonetic probe: {result.model['name']}",
        "",
        f"- alignments: `{result.source}` ({result.aligner}): {result.utterances} utterances, {result.frames} "
        f"frames at {result.frame_rate:g} frames/s ({result.seconds / 60:.1f} min), "
        f"{len(result.phone_counts)} phones, phone entropy {result.phone_entropy_bits:.2f} bits",
        *(
            [
                f"- k-means of other speech fit on `{result.kmeans_fit['source']}`: "
                f"{result.kmeans_fit['utterances']} utterances, {result.kmeans_fit['frames']} frames"
            ]
            if result.kmeans_fit
            else []
        ),
        f"- model: weights sha256 `{str(result.model['hash'])[:12]}`, {result.model['num_codebooks']} codebooks x "
        f"{result.model['codebook_size']} codes"
        + (
            f", first-codebook hold {result.model['first_codebook_hold']:g}"
            if result.model.get("first_codebook_hold")
            else ""
        ),
        "",
        summary_sentence(result),
        "",
        "Each row is one code stream over the same frames. PNMI = I(phone; code) / H(phone); phone purity: frame "
        "accuracy when each code is read as its most frequent phone; held-out phone purity: the same with the "
        f"reading learnt on other utterances ({HELDOUT_FOLDS} folds), which small samples cannot "
        "inflate as they do the other columns; code purity: HuBERT's cluster purity; run: frames per run of identical codes; dedup: "
        "tokens per second after collapsing repeats. Baselines: k-means on log-mel frames (fit on these "
        "frames, which favours it)"
        + (
            ", the same k-means fit on other speech (learnt elsewhere, as the codebooks are)"
            if result.kmeans_fit
            else ""
        )
        + ", uniformly random codes (their scores are the bias of the plug-in estimates at this size); "
        "`phones`: the labels themselves (how long a phone lasts).",
        "",
        "| codes | K | used | PNMI ↑ | phone purity ↑ | held-out phone purity ↑ | code purity ↑ | run (frames) | "
        "dedup tokens/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result.codes:
        lines.append(
            f"| {row.name} | {row.num_codes} | {row.used_codes} | {_number(row.pnmi)} | "
            f"{_number(row.phone_purity)} | {_number(row.heldout_phone_purity)} | {_number(row.code_purity)} | "
            f"{row.mean_run_length:.2f} | {row.dedup_rate:.1f} |"
        )
    lines += [
        "",
        f"Linear probes (logistic regression to the phone, trained on {split['train_utterances']} utterances / "
        f"{split['train_frames']} frames, tested on {split['test_utterances']} held-out utterances / "
        f"{split['test_frames']} frames); always answering the most frequent training phone scores "
        f"{result.majority_accuracy:.3f}:",
        "",
        "| features | dim | train accuracy | test accuracy ↑ |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {probe.name} | {probe.dim} | {probe.train_accuracy:.3f} | {probe.test_accuracy:.3f} |"
        for probe in result.linear
    ]
    lines.append("")
    if result.notes:
        lines += [*(f"- {note}" for note in result.notes), ""]
    if plot:
        lines += [f"![phonetic probe]({plot})", ""]
    return lines


def write_probe_report(result: ProbeResult, folder: str | Path) -> None:
    """probe.json, probe.md and probe.png into ``folder`` (created if needed)."""
    from vqaudio.evaluation.plots import plot_phonetic_probe

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plot_phonetic_probe(result, folder / PROBE_PLOT)
    with atomic_path(folder / "probe.json") as tmp:
        tmp.write_text(json.dumps(probe_dict(result), indent=2, allow_nan=False) + "\n")
    with atomic_path(folder / "probe.md") as tmp:
        tmp.write_text("\n".join(probe_markdown(result)).rstrip() + "\n")


def run_probe_report(
    alignments: str | Path,
    tokenizer: Tokenizer,
    out: str | Path,
    options: ProbeOptions = ProbeOptions(),
    overwrite: bool = False,
) -> ProbeResult:
    """``run_probe``, then write the folder ``out`` atomically (probe.json, probe.md, probe.png).

    Raises:
        FileExistsError: ``out`` exists and ``overwrite`` is False (checked before any work).
        and everything ``run_probe`` raises.
    """
    out = Path(out)
    check_output(
        out,
        overwrite=overwrite,
        folder=True,
        replaceable=lambda p: str(p) in PROBE_FILES,
        what="`vqaudio probe`",
    )
    result = run_probe(alignments, tokenizer, options)
    with atomic_folder(out, overwrite=overwrite) as staging:
        write_probe_report(result, staging)
    return result


def _number(value: float) -> str:
    return f"{value:.3f}" if math.isfinite(value) else "–"


def _finite(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        key: None if isinstance(value, float) and not math.isfinite(value) else value
        for key, value in entry.items()
    }
