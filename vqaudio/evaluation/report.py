"""The report folder of ``vqaudio eval``: every number in report.json, tables in report.md, figures, WAVs.

    report/
      report.json             format "vqaudio-eval-report": data, model, environment, metric notes, alignment,
                              systems (vqaudio_nq{n}, codec2_{mode}, opus_{kbps}k) with summary statistics,
                              codebooks (stats and counts), per-utterance scores and lags, examples
      report.md               the same as tables (reconstruction, voice), with notes on missing metrics and
                              baselines
      report.html             one self-contained page: the tables, the figures and, per example, a grid
                              of audio players with narrow-band spectrograms (``html_report``)
      quality_vs_bitrate.png  PESQ-WB, STOI, mel distance, SI-SDR, voicing recall, F0 error, HNR drop and
                              DNSMOS OVRL against kbps, baselines on the same axes, the original as a line
      codebook_usage.png      sorted code frequencies, one subplot per codebook
      phonetic_probe.png      with --probe: the phonetic probe's figure (``probe_report``; report.json's
                              "phonetic_probe" holds its numbers, report.md its tables)
      examples/<utt>/         original.wav, one WAV per system (aligned), spectrogram.png; the examples are
                              the median, worst and best utterances of the model at its highest n_q
                              (``evaluate.choose_examples``; report.json's "example_choice" says how)

Summary statistics are over utterances (each whole utterance counts once, whatever its length): mean, median,
standard deviation and the half-width of a normal-approximation 95% confidence interval of the mean
(1.96 * std / sqrt(n)). Metrics that failed on a clip are left out of its statistics and counted. The
original audio has a row of its own for the metrics that need no reference (DNSMOS; the word error rate when
the corpus has transcripts).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from vqaudio._version import __version__
from vqaudio.evaluation import alignment, voice
from vqaudio.evaluation.html_report import REPORT_HTML, write_html
from vqaudio.evaluation.metrics import (
    METRICS,
    NO_REFERENCE_METRICS,
    SI_SDR_LIMIT_DB,
    STFT_DISTANCE_FFT_SIZES,
)
from vqaudio.evaluation.plots import (
    QualityPoint,
    plot_codebook_usage,
    plot_phonetic_probe,
    plot_quality_vs_bitrate,
    plot_spectrograms,
)
from vqaudio.evaluation.probe_report import probe_dict, probe_markdown
from vqaudio.evaluation.results import (
    ALIGNMENT_NOTE,
    EXAMPLE_RANKING_METRICS,
    EvalResult,
    ExampleChoice,
    SystemResult,
    safe_name,
)
from vqaudio.io.atomic import atomic_path
from vqaudio.io.audio import save_audio

REPORT_FORMAT = "vqaudio-eval-report"
REPORT_FORMAT_VERSION = 1
QUALITY_PLOT = "quality_vs_bitrate.png"
CODEBOOK_PLOT = "codebook_usage.png"
PROBE_PLOT = "phonetic_probe.png"
EXAMPLES_DIR = "examples"

# report.md columns of the two tables: (metric, header, decimals)
TABLE_METRICS = (
    ("pesq_wb", "PESQ-WB ↑", 2),
    ("stoi", "STOI ↑", 3),
    ("mel_distance", "mel L1 ↓", 3),
    ("stft_distance", "STFT dist ↓", 3),
    ("si_sdr", "SI-SDR dB ↑", 1),
)
VOICE_TABLE_METRICS = (
    ("voicing_recall", "voicing recall ↑", 2),
    ("voicing_precision", "voicing precision ↑", 2),
    ("f0_error_cents", "F0 error cents ↓", 0),
    ("f0_gross_error_rate", "gross F0 errors ↓", 2),
    ("hnr_drop_db", "HNR drop dB ↓", 1),
    ("dnsmos_sig", "DNSMOS SIG ↑", 2),
    ("dnsmos_bak", "DNSMOS BAK ↑", 2),
    ("dnsmos_ovrl", "DNSMOS OVRL ↑", 2),
    ("wer", "WER ↓", 3),
)
# report.html's summary: the same two tables (together every metric)
HTML_TABLES = (("Reconstruction quality", TABLE_METRICS, True), ("Voice", VOICE_TABLE_METRICS, False))
# how the ranking metrics of the examples are named in the reports
RANKING_LABELS = {"pesq_wb": "PESQ-WB", "stoi": "STOI", "mel_distance": "log-mel distance"}


class MetricSummary(NamedTuple):
    """A metric over the utterances a system scored (NaN statistics when ``count`` is 0)."""

    mean: float
    median: float
    std: float
    ci95: float  # half-width of the 95% confidence interval of the mean
    scored: int  # utterances with a value
    failed: int  # utterances on which the metric failed


def summarize(system: SystemResult, metric: str) -> MetricSummary:
    """Statistics of one metric of one system, failures excluded."""
    values = system.values(metric)
    finite = values[np.isfinite(values)]
    failed = len(system.metric_failures(metric))
    if finite.size == 0:
        return MetricSummary(math.nan, math.nan, math.nan, math.nan, 0, failed)
    std = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
    ci95 = 1.96 * std / math.sqrt(finite.size) if finite.size > 1 else math.nan
    return MetricSummary(float(finite.mean()), float(np.median(finite)), std, ci95, int(finite.size), failed)


def write_report(result: EvalResult, folder: str | Path) -> None:
    """Write report.json, report.md, report.html, the figures and the example clips into ``folder``.

    Args:
        result: from ``vqaudio.evaluation.evaluate.evaluate``.
        folder: output folder (created if needed); ``run_evaluation`` passes a temporary one and renames it
            when done.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    examples = _write_examples(result, folder)
    plot_quality_vs_bitrate(
        _quality_points(result),
        folder / QUALITY_PLOT,
        title=_title(result),
        references=_original_means(result),
    )
    plot_codebook_usage(result.code_counts, result.codebooks, folder / CODEBOOK_PLOT)
    if result.probe is not None:
        plot_phonetic_probe(result.probe, folder / PROBE_PLOT)
    report = _json_ready(report_dict(result, examples))
    with atomic_path(folder / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    with atomic_path(folder / "report.md") as tmp:
        tmp.write_text(markdown(result, examples))
    write_html(report, folder, HTML_TABLES)  # reads the figures and example WAVs written above


def _system_entry(result: EvalResult, system: SystemResult) -> dict[str, Any]:
    """One system's numbers in report.json: rates, speeds, metric summaries, failures, lags or entropy."""
    spec = system.spec
    entry: dict[str, Any] = {
        "family": spec.family,
        "kbps": spec.kbps,
        "measured_kbps": system.measured_kbps,
        "n_q": spec.n_q,
        "tokens_per_second": spec.tokens_per_second,
        "utterances": len(system.scores),
        "audio_seconds": system.audio_seconds,
        "encode_seconds": system.encode_seconds,
        "decode_seconds": system.decode_seconds,
        "encode_rtf": system.encode_rtf,
        "decode_rtf": system.decode_rtf,
        "metrics": {metric: summarize(system, metric)._asdict() for metric in METRICS},
        "metric_failures": {metric: system.metric_failures(metric) for metric in METRICS},
        "codec_failures": system.failures,
    }
    if spec.family == "vqaudio":
        entry["entropy_kbps"] = _entropy_kbps(result, spec.n_q or 0)
    else:
        lags = np.array(list(system.lags.values()), dtype=np.float64) * 1000 / result.sample_rate
        entry["lag_ms"] = {
            "median": float(np.median(lags)) if lags.size else None,
            "min": float(lags.min()) if lags.size else None,
            "max": float(lags.max()) if lags.size else None,
        }
    return entry


def _utterance_entries(result: EvalResult) -> list[dict[str, Any]]:
    """Per utterance in report.json: its scores, what the recogniser heard, and the baselines' lags."""
    return [
        {
            "id": utt.id,
            "path": utt.path,
            "seconds": utt.seconds,
            "text": utt.text,
            "scores": {
                system.spec.name: {metric: getattr(system.scores[utt.id], metric) for metric in METRICS}
                for system in _scored_rows(result)
                if utt.id in system.scores
            },
            "recognized": {
                system.spec.name: system.scores[utt.id].recognized
                for system in _scored_rows(result)
                if utt.id in system.scores and system.scores[utt.id].recognized is not None
            },
            "lags": {
                system.spec.name: system.lags[utt.id] for system in result.systems if utt.id in system.lags
            },
        }
        for utt in result.utterances
    ]


def report_dict(result: EvalResult, examples: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Every number of the evaluation as plain JSON-ready data (NaN becomes null when written)."""
    systems = {system.spec.name: _system_entry(result, system) for system in result.systems}
    original = result.original
    return {
        "format": REPORT_FORMAT,
        "format_version": REPORT_FORMAT_VERSION,
        "vqaudio_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data": {
            "source": result.source,
            "sample_rate": result.sample_rate,
            "utterances": len(result.utterances),
            "seconds": sum(utt.seconds for utt in result.utterances),
            "skipped": [{"path": path, "error": error} for path, error in result.skipped],
        },
        "model": {"path": result.model_path, **result.model},
        "options": {
            "n_q": None if result.options.n_q is None else list(result.options.n_q),
            "max_utterances": result.options.max_utterances,
            "max_seconds": result.options.max_seconds,
            "baselines": result.options.baselines,
            "skip_bad": result.options.skip_bad,
            "seed": result.options.seed,
            "voice": result.options.voice,
            "wer": result.options.wer,
            "language": result.options.language,
            "probe": result.options.probe,
        },
        "environment": result.environment,
        "metrics": {
            name: {
                "description": description,
                "unit": unit,
                "higher_is_better": higher,
                "available": name not in result.unavailable_metrics,
                "note": result.unavailable_metrics.get(name),
            }
            for name, (description, unit, higher) in METRICS.items()
        },
        "alignment": {
            "method": ALIGNMENT_NOTE,
            "max_lag_seconds": alignment.MAX_LAG_SECONDS,
            "coarse_resolution_seconds": alignment.SPECTRAL_HOP_SECONDS,
            "applied_to": [s.spec.name for s in result.systems if s.spec.family != "vqaudio"],
        },
        "systems": systems,
        "original": None
        if original is None
        else {
            "metrics": {metric: summarize(original, metric)._asdict() for metric in NO_REFERENCE_METRICS},
            "metric_failures": {metric: original.metric_failures(metric) for metric in NO_REFERENCE_METRICS},
        },
        "wer_reference": _wer_reference(result),
        "baselines_unavailable": result.unavailable_baselines,
        "codebooks": [
            {"index": index, **stats._asdict(), "counts": result.code_counts[index].tolist()}
            for index, stats in enumerate(result.codebooks)
        ],
        "phonetic_probe": None if result.probe is None else probe_dict(result.probe),
        "notes": result.notes,
        "utterances": _utterance_entries(result),
        "example_choice": _example_choice_entry(result.example_choice),
        "examples": examples or [],
        "plots": {
            "quality_vs_bitrate": QUALITY_PLOT,
            "codebook_usage": CODEBOOK_PLOT,
            **({"phonetic_probe": PROBE_PLOT} if result.probe is not None else {}),
        },
    }


def markdown(result: EvalResult, examples: list[dict[str, Any]] | None = None) -> str:
    """report.md: the main table, codebook usage, alignment, unavailable metrics and baselines, files."""
    model = result.model
    seconds = sum(utt.seconds for utt in result.utterances)
    env = result.environment
    lines = [
        f"# vqaudio evaluation: {model['name']}",
        "",
        f"- data: `{result.source}`: {len(result.utterances)} utterances, {seconds / 60:.1f} min at "
        f"{result.sample_rate} Hz"
        + (f", {len(result.skipped)} unreadable files skipped" if result.skipped else ""),
        f"- model: `{result.model_path or model['name']}` (weights sha256 `{str(model['hash'])[:12]}`), "
        f"{model['quantizer']} VQ {model['num_codebooks']} x {model['codebook_size']} codes at "
        f"{model['frame_rate']:g} frames/s ({model['bitrate_kbps']:.2f} kbps at full n_q), "
        f"{model['num_parameters'] / 1e6:.2f} M parameters"
        + (
            f", first-codebook hold {model['first_codebook_hold']:g}"
            if model.get("first_codebook_hold")
            else ""
        ),
        f"- machine: {env['device']}, {env['threads']} torch threads, {env['processor']} "
        f"({env['cpu_count']} CPUs), torch {env['torch_version']}",
        f"- [{REPORT_HTML}]({REPORT_HTML}): these tables and figures on one page, with audio players and "
        "narrow-band spectrograms of the examples",
        "",
        "## Reconstruction quality",
        "",
        "Mean ± 95% confidence half-width over utterances. kbps: nominal bitrate (vqaudio: n_q x log2(K) "
        "bits per frame; Codec2: the mode; Opus: the VBR target); measured: the encoded stream's actual "
        "size (Opus: audio packets, without the Ogg container). RTF: processing time / audio duration on "
        "this machine (below 1 is faster than real time); the baselines' RTFs include starting their "
        "command-line tools and file I/O, so they overstate the codecs' own cost.",
        "",
    ]
    lines += _quality_table(result)
    lines += ["", *_failure_notes(result, TABLE_METRICS), f"![quality vs bitrate]({QUALITY_PLOT})", ""]
    lines += [
        "## Voice",
        "",
        "Is the voice still voiced, at the same pitch, clean, and saying the same words? Voicing, F0 and HNR "
        "from Praat's pitch tracker on the input and the (aligned) output; DNSMOS P.835 needs no reference, "
        "so the original is scored too (the ceiling); " + _wer_sentence(result),
        "",
        *_metric_table(result, VOICE_TABLE_METRICS, _scored_rows(result), rtfs=False),
        "",
        *_failure_notes(result, VOICE_TABLE_METRICS),
    ]

    lines += _metric_notes(result)
    lines += _codebook_section(result)
    if result.probe is not None:
        lines += probe_markdown(result.probe, heading="##", plot=PROBE_PLOT)
    lines += [
        "## Alignment",
        "",
        ALIGNMENT_NOTE,
        "",
    ]
    lags = [(s.spec.name, np.array(list(s.lags.values()))) for s in result.systems if s.lags]
    if lags:
        lines.append(
            "Median lag found (ms): "
            + ", ".join(f"`{name}` {np.median(v) * 1000 / result.sample_rate:.1f}" for name, v in lags)
            + "."
        )
        lines.append("")
    lines += _baseline_notes(result)
    if result.notes:
        lines += ["## Notes", "", *[f"- {note}" for note in result.notes], ""]
    if result.skipped:
        lines += ["## Skipped files", "", *[f"- `{path}`: {error}" for path, error in result.skipped], ""]
    lines += _example_section(examples or [], result.example_choice)
    return "\n".join(lines).rstrip() + "\n"


def markdown_summary(result: EvalResult) -> str:
    """The quality and voice tables and their failure notes (what ``vqaudio eval`` prints when done)."""
    lines = [*_quality_table(result), "", *_failure_notes(result, TABLE_METRICS)]
    if any(metric not in result.unavailable_metrics for metric, _, _ in VOICE_TABLE_METRICS):
        lines += [*_metric_table(result, VOICE_TABLE_METRICS, _scored_rows(result), rtfs=False), ""]
        lines += _failure_notes(result, VOICE_TABLE_METRICS)
    return "\n".join(lines).rstrip() + "\n"


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------
def _quality_table(result: EvalResult) -> list[str]:
    """The main table: one row per system, mean ± 95% CI of each metric, kbps and RTFs."""
    return _metric_table(result, TABLE_METRICS, result.systems, rtfs=True)


def _metric_table(
    result: EvalResult,
    columns: tuple[tuple[str, str, int], ...],
    systems: list[SystemResult],
    rtfs: bool,
) -> list[str]:
    """One row per system: kbps, mean ± 95% CI of each metric in ``columns`` (and the RTFs)."""
    headers = ["system", "kbps", "measured kbps", "tokens/s", *(header for _, header, _ in columns)]
    headers += ["enc RTF", "dec RTF"] if rtfs else []
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    for system in systems:
        spec = system.spec
        row = [
            f"`{spec.name}`",
            _number(spec.kbps, 2),
            _number(system.measured_kbps, 2),
            "" if spec.tokens_per_second is None else f"{spec.tokens_per_second:g}",
        ]
        for metric, _, decimals in columns:
            stats = summarize(system, metric)
            if metric in result.unavailable_metrics:
                row.append("n/a")
            elif stats.scored == 0:
                # nothing measured without a failure: a metric that does not apply (the original's SI-SDR)
                row.append("failed" if stats.failed else "")
            else:
                cell = _number(stats.mean, decimals)
                if math.isfinite(stats.ci95):
                    cell += f" ± {_number(stats.ci95, decimals)}"
                row.append(cell + ("*" if stats.failed else ""))
        if rtfs:
            row += [_rtf(system.encode_rtf), _rtf(system.decode_rtf)]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _scored_rows(result: EvalResult) -> list[SystemResult]:
    """The systems, then the original when it was scored."""
    return [*result.systems, *([result.original] if result.original is not None else [])]


def _wer_reference(result: EvalResult) -> dict[str, Any] | None:
    """What the word error rates were measured against (None when they were not measured)."""
    if "wer" in result.unavailable_metrics:
        return None
    with_text = sum(1 for utt in result.utterances if utt.text and voice.words(utt.text))
    return {
        "transcript": with_text,
        "recognition_of_original": len(result.utterances) - with_text,
        "recognizer": "pocketsphinx (its US English model)",
    }


def _wer_sentence(result: EvalResult) -> str:
    reference = _wer_reference(result)
    if reference is None:
        return f"no word error rates ({result.unavailable_metrics.get('wer', 'not measured')})."
    parts = []
    if reference["transcript"]:
        parts.append(f"the corpus transcript ({reference['transcript']} utterances)")
    if reference["recognition_of_original"]:
        parts.append(
            f"what the recogniser hears in the original ({reference['recognition_of_original']} utterances "
            "without a transcript; the original's own WER is then 0 by definition and left out)"
        )
    return (
        f"WER is the word error rate of {reference['recognizer']} against " + " and ".join(parts) + ". "
        "report.json holds what it heard in each clip."
    )


def _failure_notes(
    result: EvalResult, columns: tuple[tuple[str, str, int], ...], max_listed: int = 5
) -> list[str]:
    """One line per metric and reason: which utterances, in how many systems (marked * in the table).

    The codecs' own failures are listed with the first table (``TABLE_METRICS``).
    """
    notes = []
    headers = {metric: header.rsplit(" ", 1)[0] for metric, header, _ in columns}
    rows = _scored_rows(result)
    for metric, header in headers.items():
        by_reason: dict[str, dict[str, set[str]]] = {}  # reason -> utterance -> systems
        for system in rows:
            for failure in system.metric_failures(metric):
                utterance, reason = failure.split(": ", 1)
                by_reason.setdefault(reason, {}).setdefault(utterance, set()).add(system.spec.name)
        for reason, utterances in sorted(by_reason.items()):
            names = sorted(utterances)
            listed = ", ".join(f"`{name}`" for name in names[:max_listed])
            more = f" and {len(names) - max_listed} more" if len(names) > max_listed else ""
            systems = set().union(*utterances.values())
            notes.append(
                f"- \\* {header}: {reason} on {len(names)} utterance(s) ({listed}{more}), "
                f"in {len(systems)} of {len(rows)} systems; left out of those means"
            )
    for system in result.systems if columns is TABLE_METRICS else []:
        if system.failures:
            notes.append(
                f"- `{system.spec.name}`: the codec failed on {len(system.failures)} utterance(s), left out: "
                f"{system.failures[0]}"
            )
    return [*notes, ""] if notes else []


def _metric_notes(result: EvalResult) -> list[str]:
    lines = ["## Metrics", ""]
    for name, (description, unit, higher) in METRICS.items():
        direction = "higher is better" if higher else "lower is better"
        status = (
            f" **Unavailable: {result.unavailable_metrics[name]}.**"
            if name in result.unavailable_metrics
            else ""
        )
        lines.append(f"- `{name}`: {description}{f' ({unit})' if unit else ''}, {direction}.{status}")
    lines += [
        f"- SI-SDR is computed on zero-mean signals and clipped to ±{SI_SDR_LIMIT_DB:g} dB; the STFT "
        "distance averages spectral convergence + log-magnitude L1 over FFT sizes "
        f"{list(STFT_DISTANCE_FFT_SIZES)}; the mel distance is the mean L1 of natural-log mel magnitudes "
        "(n_fft 1024, hop 256, 80 bands).",
        f"- Praat (parselmouth): `to_pitch_ac` with {voice.PITCH_TIME_STEP * 1000:g} ms steps, "
        f"{voice.PITCH_FLOOR_HZ:g}-{voice.PITCH_CEILING_HZ:g} Hz, and `to_harmonicity_cc`, on the input and on "
        "the aligned output; HNR below "
        f"{voice.HNR_FLOOR_DB:g} dB (Praat's -200 dB for no periodicity) counts as {voice.HNR_FLOOR_DB:g} dB. "
        "DNSMOS scores 9 s windows (shorter clips repeated) at 16 kHz and averages them.",
        "",
    ]
    return lines


def _codebook_section(result: EvalResult) -> list[str]:
    frame_rate = result.frame_rate
    lines = [
        "## Codebook usage",
        "",
        f"Over the full-bitrate codes of all {len(result.utterances)} utterances. Entropy is of each "
        "codebook's code distribution (bits); perplexity = 2^entropy, the effective number of codes.",
        "",
        "| codebook | used | entropy (bits) | log2 K | perplexity | codes counted |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for index, stats in enumerate(result.codebooks):
        lines.append(
            f"| {index + 1} | {stats.used_fraction:.1%} | {stats.entropy_bits:.2f} "
            f"| {stats.max_entropy_bits:.2f} | {stats.perplexity:.1f} | {stats.num_codes} |"
        )
    total_entropy = sum(stats.entropy_bits for stats in result.codebooks)
    nominal = sum(stats.max_entropy_bits for stats in result.codebooks)
    lines += [
        "",
        f"At full n_q the codes carry {total_entropy:.1f} of {nominal:.1f} bits per frame: "
        f"{total_entropy * frame_rate / 1000:.2f} kbps with a per-codebook entropy coder, against "
        f"{nominal * frame_rate / 1000:.2f} kbps nominal.",
        "",
        f"![codebook usage]({CODEBOOK_PLOT})",
        "",
    ]
    return lines


def _baseline_notes(result: EvalResult) -> list[str]:
    if not result.options.baselines:
        return ["## Baselines", "", "Baselines were not run (--no-baselines).", ""]
    if not result.unavailable_baselines:
        return []
    lines = ["## Baselines not run", ""]
    lines += [f"- `{name}`: {note}" for name, note in result.unavailable_baselines.items()]
    return [*lines, ""]


def example_rule(choice: ExampleChoice) -> str:
    """How the examples were chosen, in one paragraph (report.md, report.html, report.json)."""
    metric = RANKING_LABELS.get(choice.metric, choice.metric)
    order = list(EXAMPLE_RANKING_METRICS)
    missing = [RANKING_LABELS[name] for name in order[: order.index(choice.metric)]]
    fallback = f" ({' and '.join(missing)} not measured)" if missing else ""
    roles = list(choice.roles.values())
    listed = ", ".join(roles[:-1]) + f" and {roles[-1]}" if len(roles) > 1 else roles[0]
    return (
        f"How the examples were chosen: the {choice.candidates} utterances scored by {choice.system} (the model "
        f"at its highest evaluated n_q) were ranked by {metric}{fallback}, and the {listed} of them are shown, "
        "worst first. More examples (--examples) add the quartiles, then the eighths; clips quieter than "
        "-60 dBFS are never chosen."
    )


def _example_choice_entry(choice: ExampleChoice | None) -> dict[str, Any] | None:
    if choice is None:
        return None
    return {
        "system": choice.system,
        "metric": choice.metric,
        "label": RANKING_LABELS.get(choice.metric, choice.metric),
        "candidates": choice.candidates,
        "rule": example_rule(choice),
    }


def _example_section(examples: list[dict[str, Any]], choice: ExampleChoice | None) -> list[str]:
    if not examples:
        return []
    lines = ["## Examples", ""]
    if choice is not None:
        lines += [example_rule(choice), ""]
    for example in examples:
        files = ", ".join(f"[{name}]({path})" for name, path in example["wavs"].items())
        role = ""
        if choice is not None and example["id"] in choice.roles:
            role = (
                f": {example['role']} {RANKING_LABELS.get(choice.metric, choice.metric)} "
                f"({_number(example['value'], 2)})"
            )
        lines += [
            f"### `{example['id']}`{role}",
            "",
            f"Listen: {files}",
            "",
            f"![spectrograms of {example['id']}]({example['spectrogram']})",
            "",
        ]
    return lines


# --------------------------------------------------------------------------------------------------
# Figures and example files
# --------------------------------------------------------------------------------------------------
def _quality_points(result: EvalResult) -> list[QualityPoint]:
    points = []
    for system in result.systems:
        spec = system.spec
        summaries = {metric: summarize(system, metric) for metric in METRICS}
        label = f"nq{spec.n_q}" if spec.family == "vqaudio" else spec.name.split("_", 1)[1]
        points.append(
            QualityPoint(
                spec.family,
                label,
                spec.kbps,
                {metric: summary.mean for metric, summary in summaries.items()},
                {metric: summary.ci95 for metric, summary in summaries.items()},
            )
        )
    return points


def _original_means(result: EvalResult) -> dict[str, float]:
    """The original's mean of each metric it was scored on (a horizontal line in the figure)."""
    if result.original is None:
        return {}
    means = {metric: summarize(result.original, metric).mean for metric in NO_REFERENCE_METRICS}
    return {metric: mean for metric, mean in means.items() if math.isfinite(mean)}


def best_baseline(result: EvalResult) -> str | None:
    """The baseline with the best mean PESQ-WB (or, without PESQ, the lowest mel distance)."""
    candidates = [s for s in result.systems if s.spec.family != "vqaudio" and s.scores]
    for metric, sign in (("pesq_wb", 1.0), ("mel_distance", -1.0)):
        scored = [(sign * summarize(s, metric).mean, s.spec.name) for s in candidates]
        scored = [(value, name) for value, name in scored if math.isfinite(value)]
        if scored:
            return max(scored)[1]
    return None


def _write_examples(result: EvalResult, folder: Path) -> list[dict[str, Any]]:
    """WAVs of every system for the example clips, and a spectrogram figure of the key ones each."""
    model_rows = [s.spec.name for s in result.systems if s.spec.family == "vqaudio"]
    shown = [model_rows[-1]] if model_rows else []  # highest n_q last: systems are sorted by n_q
    if len(model_rows) > 1:
        shown.append(model_rows[0])
    baseline = best_baseline(result)
    if baseline is not None:
        shown.append(baseline)
    written = []
    used_names: set[str] = set()
    for utterance_id, signals in result.examples.items():
        name = safe_name(utterance_id)
        while name in used_names:
            name += "_"
        used_names.add(name)
        clip_folder = folder / EXAMPLES_DIR / name
        clip_folder.mkdir(parents=True, exist_ok=True)
        wavs = {}
        for system_name, audio in signals.items():
            save_audio(clip_folder / f"{system_name}.wav", audio, result.sample_rate)
            wavs[system_name] = f"{EXAMPLES_DIR}/{name}/{system_name}.wav"
        rows = [("original", signals["original"])]
        rows += [(system_name, signals[system_name]) for system_name in shown if system_name in signals]
        plot_spectrograms(rows, result.sample_rate, clip_folder / "spectrogram.png", title=utterance_id)
        choice = result.example_choice
        written.append(
            {
                "id": utterance_id,
                "role": None if choice is None else choice.roles.get(utterance_id),
                "value": None if choice is None else choice.values.get(utterance_id),
                "wavs": wavs,
                "spectrogram": f"{EXAMPLES_DIR}/{name}/spectrogram.png",
                "spectrogram_rows": [label for label, _ in rows],
            }
        )
    return written


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------
def _entropy_kbps(result: EvalResult, n_q: int) -> float:
    """kbps of the first n_q codebooks with a per-codebook (unigram) entropy coder."""
    return sum(stats.entropy_bits for stats in result.codebooks[:n_q]) * result.frame_rate / 1000


def _title(result: EvalResult) -> str:
    return f"{result.model['name']} vs baselines on {len(result.utterances)} utterances"


def _number(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}" if math.isfinite(value) else "–"


def _rtf(value: float) -> str:
    return f"{value:.3g}" if math.isfinite(value) else "–"


def _json_ready(value: Any) -> Any:
    """NaN and infinities become null (JSON has no NaN); numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
