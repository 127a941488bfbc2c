"""report.html: the eval report as one page to read and listen to in a browser.

    header      model (name, weights hash, quantizer, bitrates), data, date, machine
    summary     the tables of report.md: every metric of every system (the model at each n_q, the baselines,
                the original where a metric needs no reference), mean ± 95% CI, ↑/↓ for the better
                direction, the best system of each column in bold, kbps and real-time factors
    figures     quality vs bitrate, codebook usage (and the phonetic probe's with --probe)
    examples    per example utterance (the rule that chose them is stated on the page), a grid of audio
                players: the original, the model at each n_q, every baseline, each with its clip's
                narrow-band spectrogram under it
    notes       unavailable metrics and baselines, metric failures, the baselines' alignment

The file is self-contained: figures are base64 PNG, audio base64 FLAC (lossless, played by every current
browser), and there is no script and no external resource, so it can be mailed or opened from anywhere. It
is built from report.json's data and the report folder's files (the figures, ``examples/<utt>/*.wav``), so it
says what report.md and report.json say. The grid wraps to the screen's width (two columns on a phone);
wide tables scroll sideways inside their box.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from vqaudio.evaluation.plots import (
    NARROWBAND_HOP_SECONDS,
    NARROWBAND_MAX_HZ,
    NARROWBAND_RANGE_DB,
    NARROWBAND_WINDOW_SECONDS,
    narrowband_images,
)
from vqaudio.io.atomic import atomic_path

REPORT_HTML = "report.html"
EMBED_MAX_SECONDS = 10.0  # longer example clips are embedded (and drawn) from their start only

# a table of the summary: (title, [(metric, header, decimals)], with real-time factors)
Table = tuple[str, Sequence[tuple[str, str, int]], bool]

FIGURE_CAPTIONS = {
    "quality_vs_bitrate": "Quality against bitrate: every system on the same axes (mean ± 95% CI); dashed: "
    "the original.",
    "codebook_usage": "Codebook usage: code frequencies sorted from most to least used; dashed: uniform.",
    "phonetic_probe": "Phonetic probe: how much the codes say about the phone.",
}

STYLE = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; line-height: 1.45;
       color: #1d1d1f; background: #fff; max-width: 1500px; margin: 0 auto; padding: 0 16px 48px; }
h1 { font-size: 1.45rem; margin: 1.2rem 0 0.4rem; }
h2 { font-size: 1.2rem; margin: 2rem 0 0.6rem; padding-bottom: 0.2rem; border-bottom: 1px solid #ddd; }
h3 { font-size: 1rem; margin: 1.4rem 0 0.3rem; overflow-wrap: anywhere; }
p, li { max-width: 72rem; }
code { font-size: 0.92em; }
.facts { margin: 0; padding-left: 1.2rem; color: #444; }
.facts li { overflow-wrap: anywhere; }
.scroll { overflow-x: auto; margin: 0.4rem 0; }
table { border-collapse: collapse; font-size: 0.85rem; font-variant-numeric: tabular-nums;
        white-space: nowrap; }
th, td { padding: 0.25rem 0.55rem; border-bottom: 1px solid #e6e6e6; text-align: right; }
th { background: #f4f4f4; font-weight: 600; }
th:first-child, td:first-child { text-align: left; position: sticky; left: 0; background: #fff; }
th:first-child { background: #f4f4f4; }
td.best { font-weight: 700; }
tr.vqaudio td:first-child { color: #1f77b4; }
tr.codec2 td:first-child { color: #2ca02c; }
tr.opus td:first-child { color: #d96b00; }
tr.original td { color: #555; font-style: italic; }
figure { margin: 0.6rem 0; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { font-size: 0.85rem; color: #555; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(230px, 1fr)); gap: 10px; }
.clip.row { grid-column-start: 1; }  /* each codec family starts a row: the original and vqaudio, Codec2, Opus */
.clip { margin: 0; padding: 6px; border: 1px solid #e3e3e3; border-top: 3px solid #999; border-radius: 6px;
        background: #fafafa; min-width: 0; display: flex; flex-direction: column; }
.clip.vqaudio { border-top-color: #1f77b4; }
.clip.codec2 { border-top-color: #2ca02c; }
.clip.opus { border-top-color: #d96b00; }
/* captions of one row grow to the same height, so the players and spectrograms line up */
.clip figcaption { flex: 1; color: #1d1d1f; margin-bottom: 4px; overflow-wrap: anywhere; }
.clip figcaption span { display: block; color: #666; }
.clip audio { width: 100%; height: 36px; display: block; }
.clip img { width: 100%; height: auto; aspect-ratio: 12 / 5; display: block; margin-top: 4px;
            border-radius: 3px; }
.transcript { color: #444; font-style: italic; margin: 0 0 0.5rem; }
.notes li { font-size: 0.9rem; }
@media (max-width: 600px) {
  body { padding: 0 8px 32px; }
  h1 { font-size: 1.2rem; }
  .grid { grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 6px; }
  .clip { padding: 4px; }
  .clip figcaption { font-size: 0.78rem; }
  table { font-size: 0.75rem; }
}
"""


def write_html(report: Mapping[str, Any], folder: str | Path, tables: Sequence[Table]) -> Path:
    """Write ``folder/report.html`` (atomically) from report.json's data and the folder's figures and WAVs.

    Args:
        report: report.json's content (``report.report_dict``, with NaN as None).
        folder: the report folder holding the figures and ``examples/``.
        tables: the summary tables, (title, [(metric, header, decimals)], with RTFs) each.
    Returns:
        the path written.
    """
    folder = Path(folder)
    page = render_html(report, folder, tables)
    with atomic_path(folder / REPORT_HTML) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return folder / REPORT_HTML


def render_html(report: Mapping[str, Any], folder: str | Path, tables: Sequence[Table]) -> str:
    """report.html's text (see ``write_html``)."""
    folder = Path(folder)
    model = report["model"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>vqaudio evaluation: {_text(model['name'])}</title>",
        f"<style>{STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>vqaudio evaluation: {_text(model['name'])}</h1>",
        *_header(report),
        "<h2>Summary</h2>",
        *_summary_intro(),
    ]
    for title, columns, rtfs in tables:
        parts.append(f"<h3>{_text(title)}</h3>")
        if all(not report["metrics"][metric]["available"] for metric, _, _ in columns):
            parts.append(
                f"<p>Not measured ({', '.join(header for _, header, _ in columns)}): see the notes.</p>"
            )
        else:
            parts += _summary_table(report, columns, rtfs)
    parts += _figures(report, folder)
    parts += _examples(report, folder)
    parts += _notes(report)
    parts += [
        f"<p><small>Written by vqaudio {_text(report['vqaudio_version'])} on {_text(report['created'])}. "
        'Every number is in <a href="report.json">report.json</a>, the same tables in '
        '<a href="report.md">report.md</a>.</small></p>',
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------
def _header(report: Mapping[str, Any]) -> list[str]:
    model, data, env = report["model"], report["data"], report["environment"]
    skipped = f", {len(data['skipped'])} unreadable files skipped" if data["skipped"] else ""
    source = "the embedded model" if model["path"] is None else f"<code>{_text(model['path'])}</code>"
    return [
        '<ul class="facts">',
        f"<li>model: {source} (weights sha256 <code>{_text(str(model['hash'])[:12])}"
        f"</code>), {_text(model['quantizer'])} VQ {model['num_codebooks']} × {model['codebook_size']} codes "
        f"at {model['frame_rate']:g} frames/s ({model['bitrate_kbps']:.2f} kbps at full n_q), "
        f"{model['num_parameters'] / 1e6:.2f} M parameters</li>",
        f"<li>data: <code>{_text(data['source'])}</code>: {data['utterances']} utterances, "
        f"{data['seconds'] / 60:.1f} min at {data['sample_rate']} Hz{_text(skipped)}</li>",
        f"<li>date: {_text(report['created'])}; machine: {_text(env['device'])}, {env['threads']} torch "
        f"threads, {_text(env['processor'])} ({env['cpu_count']} CPUs), torch {_text(env['torch_version'])}"
        "</li>",
        "</ul>",
    ]


def _summary_intro() -> list[str]:
    return [
        "<p>Mean ± 95% confidence half-width over utterances; ↑ higher is better, ↓ lower is better; the best "
        "system of each column in bold. kbps: nominal bitrate (vqaudio: the codebooks' and the pitch row's "
        "bits; Codec2: the mode; Opus: the VBR target); measured: the encoded stream's actual size. RTF: "
        "processing time / audio duration (below 1 is faster than real time; the baselines' include starting "
        "their tools). * : the metric failed on some clips (see the notes). Hover over a header for the "
        "metric's definition, over a value for its median, spread and count.</p>",
    ]


def _summary_table(
    report: Mapping[str, Any], columns: Sequence[tuple[str, str, int]], rtfs: bool
) -> list[str]:
    """One row per system (and the original, when it has values here): kbps, each metric, RTFs."""
    metrics = report["metrics"]
    rows: list[tuple[str, str, Mapping[str, Any]]] = [
        (name, entry["family"], entry) for name, entry in report["systems"].items()
    ]
    original = report.get("original")
    if original is not None and any(metric in original["metrics"] for metric, _, _ in columns):
        rows.append(("original", "original", original))
    best = {metric: _best(report, metric) for metric, _, _ in columns}
    headers = ["system", "kbps", "measured kbps", "tokens/s"]
    cells = [f"<th>{header}</th>" for header in headers]
    for metric, header, _ in columns:
        description = metrics[metric]["description"] + (
            f" ({metrics[metric]['unit']})" if metrics[metric]["unit"] else ""
        )
        cells.append(f'<th title="{_attr(description)}">{_text(header)}</th>')
    if rtfs:
        cells += ['<th title="encoding time / audio duration">enc RTF</th>', "<th>dec RTF</th>"]
    lines = ['<div class="scroll"><table>', f"<thead><tr>{''.join(cells)}</tr></thead>", "<tbody>"]
    for name, family, entry in rows:
        row = [f"<td><code>{_text(name)}</code></td>"]
        row += [
            f"<td>{_number(entry.get('kbps'), 2)}</td>",
            f"<td>{_number(entry.get('measured_kbps'), 2)}</td>",
            f"<td>{_number(entry.get('tokens_per_second'), 0)}</td>",
        ]
        for metric, _, decimals in columns:
            row.append(
                _metric_cell(metrics[metric], entry["metrics"].get(metric), decimals, name in best[metric])
            )
        if rtfs:
            row += [f"<td>{_rtf(entry.get('encode_rtf'))}</td>", f"<td>{_rtf(entry.get('decode_rtf'))}</td>"]
        lines.append(f'<tr class="{_attr(family)}">{"".join(row)}</tr>')
    lines += ["</tbody></table></div>"]
    return lines


def _metric_cell(info: Mapping[str, Any], stats: Mapping[str, Any] | None, decimals: int, best: bool) -> str:
    if not info["available"]:
        return f'<td title="{_attr(info["note"] or "not measured")}">n/a</td>'
    if stats is None or not stats["scored"]:
        # nothing measured without a failure: a metric that does not apply (the original's SI-SDR)
        return "<td>failed</td>" if stats is not None and stats["failed"] else "<td></td>"
    text = _number(stats["mean"], decimals)
    if stats["ci95"] is not None:
        text += f" ± {_number(stats['ci95'], decimals)}"
    if stats["failed"]:
        text += "*"
    hover = (
        f"median {_number(stats['median'], decimals)}, std {_number(stats['std'], decimals)}, "
        f"{stats['scored']} scored" + (f", {stats['failed']} failed" if stats["failed"] else "")
    )
    bold = ' class="best"' if best else ""
    return f'<td{bold} title="{_attr(hover)}">{text}</td>'


def _best(report: Mapping[str, Any], metric: str) -> set[str]:
    """The systems (never the original) with the best mean of ``metric``."""
    higher = report["metrics"][metric]["higher_is_better"]
    means = {
        name: entry["metrics"][metric]["mean"]
        for name, entry in report["systems"].items()
        if entry["metrics"][metric]["mean"] is not None
    }
    if not means or not report["metrics"][metric]["available"]:
        return set()
    target = max(means.values()) if higher else min(means.values())
    return {name for name, mean in means.items() if mean == target}


def _figures(report: Mapping[str, Any], folder: Path) -> list[str]:
    lines = ["<h2>Figures</h2>"]
    for key, file_name in report["plots"].items():
        path = folder / file_name
        if not path.is_file():
            continue
        caption = FIGURE_CAPTIONS.get(key, key)
        lines += [
            "<figure>",
            f'<img src="{_data_uri("image/png", path.read_bytes())}" alt="{_attr(caption)}">',
            f"<figcaption>{_text(caption)}</figcaption>",
            "</figure>",
        ]
    return lines


def _examples(report: Mapping[str, Any], folder: Path) -> list[str]:
    examples = report.get("examples") or []
    if not examples:
        return []
    choice = report.get("example_choice") or {}
    metric = choice.get("metric")
    metric_label = choice.get("label")
    systems = report["systems"]
    utterances = {utterance["id"]: utterance for utterance in report["utterances"]}
    lines = [
        "<h2>Examples</h2>",
        f"<p>{_text(choice.get('rule', ''))} Under each player: its clip's narrow-band spectrogram "
        f"(0–{NARROWBAND_MAX_HZ / 1000:g} kHz, {NARROWBAND_WINDOW_SECONDS * 1000:g} ms Hann window every "
        f"{NARROWBAND_HOP_SECONDS * 1000:g} ms, {NARROWBAND_RANGE_DB:g} dB below the original's peak, the "
        "whole clip left to right): voiced speech shows as separate harmonic lines; a whispery resynthesis "
        "as a smear. The baselines' clips are aligned to the original, as they were scored.</p>",
    ]
    for example in examples:
        utterance = utterances.get(example["id"], {})
        names = list(example["wavs"])  # "original" first, then the systems in the report's order
        clips = []
        for name in names:
            audio, sample_rate = sf.read(
                str(folder / example["wavs"][name]), dtype="float32", always_2d=False
            )
            clips.append(audio[: int(EMBED_MAX_SECONDS * sample_rate)])
        seconds = len(clips[0]) / sample_rate
        images = narrowband_images(clips, sample_rate)
        role = example.get("role")
        heading = f"<code>{_text(example['id'])}</code>"
        if role and metric_label and example.get("value") is not None:
            heading += (
                f" — {_text(role)} {_text(metric_label)} of <code>{_text(choice['system'])}</code>: "
                f"{_number(example['value'], 2)}"
            )
        about = f"{utterance.get('seconds', seconds):.1f} s"
        if utterance.get("seconds", seconds) > seconds + 1e-3:
            about += f" (the first {EMBED_MAX_SECONDS:g} s here)"
        if utterance.get("text"):
            about += f": “{utterance['text']}”"
        lines += [f"<h3>{heading}</h3>", f'<p class="transcript">{_text(about)}</p>', '<div class="grid">']
        scores = utterance.get("scores", {})
        previous_family = "vqaudio"  # the original shares the model's row
        for name, clip, image in zip(names, clips, images, strict=True):
            entry = systems.get(name)
            detail = "" if entry is None else f"{entry['kbps']:.2f} kbps"
            value = scores.get(name, {}).get(metric) if metric else None
            if value is not None and metric_label:
                detail += f" · {metric_label} {_number(value, 2)}"
            label = f"{name}, {detail}" if detail else name
            family = "original" if entry is None else entry["family"]
            row = " row" if family not in ("original", previous_family) else ""
            previous_family = family if family != "original" else previous_family
            lines += [
                f'<figure class="clip {_attr(family)}{row}">',
                f"<figcaption><code>{_text(name)}</code><span>{_text(detail or 'the input')}</span></figcaption>",
                f'<audio controls preload="metadata" title="{_attr(label)}" '
                f'src="{_data_uri("audio/flac", _flac(clip, sample_rate))}"></audio>',
                f'<img src="{_data_uri("image/png", image)}" alt="narrow-band spectrogram: {_attr(label)}">',
                "</figure>",
            ]
        lines.append("</div>")
    return lines


def _notes(report: Mapping[str, Any]) -> list[str]:
    items = []
    unavailable: dict[str, list[str]] = {}  # note -> metrics
    for name, info in report["metrics"].items():
        if not info["available"]:
            unavailable.setdefault(info["note"] or "not measured", []).append(f"<code>{_text(name)}</code>")
    for note, names in unavailable.items():
        items.append(f"{', '.join(names)} unavailable: {_text(note)}")
    if not report["options"]["baselines"]:
        items.append("Baselines were not run (--no-baselines).")
    for name, note in (report.get("baselines_unavailable") or {}).items():
        items.append(f"baseline <code>{_text(name)}</code> not run: {_text(note)}")
    for name, entry in report["systems"].items():
        for metric, failures in entry["metric_failures"].items():
            if failures:
                listed = "; ".join(failures[:3]) + (
                    f"; and {len(failures) - 3} more" if len(failures) > 3 else ""
                )
                items.append(
                    f"* <code>{_text(name)}</code> {_text(metric)} failed on {len(failures)} utterance(s), "
                    f"left out of its mean: {_text(listed)}"
                )
        if entry["codec_failures"]:
            items.append(
                f"<code>{_text(name)}</code>: the codec failed on {len(entry['codec_failures'])} utterance(s), "
                f"left out: {_text(entry['codec_failures'][0])}"
            )
    items += [_text(note) for note in report.get("notes") or []]
    items.append(f"Alignment: {_text(report['alignment']['method'])}")
    return ["<h2>Notes</h2>", '<ul class="notes">', *[f"<li>{item}</li>" for item in items], "</ul>"]


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------
def _flac(audio: np.ndarray, sample_rate: int) -> bytes:
    """16-bit FLAC of [T] float audio (the example WAVs are 16-bit already: lossless)."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def _data_uri(mime: str, payload: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def _text(value: object) -> str:
    return html.escape(str(value), quote=False)


def _attr(value: object) -> str:
    return html.escape(str(value), quote=True)


def _number(value: float | None, decimals: int) -> str:
    return f"{value:.{decimals}f}" if value is not None and math.isfinite(value) else "–"


def _rtf(value: float | None) -> str:
    return f"{value:.3g}" if value is not None and math.isfinite(value) else "–"
