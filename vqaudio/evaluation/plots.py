"""The report's figures: quality against bitrate, codebook usage histograms, spectrograms of example clips.

Figures are drawn on matplotlib's Agg canvas directly (no ``pyplot``), so writing a report never opens a
window or changes the matplotlib backend of the program that calls it. The narrow-band spectrograms of
report.html are bare images (no axes), one per clip, made with numpy and Pillow (matplotlib's own
dependency) on matplotlib's colour map.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from vqaudio.evaluation.codebook_stats import CodebookStats
from vqaudio.features import log_mel_spectrogram

if TYPE_CHECKING:
    from vqaudio.evaluation.phonetic_probe import ProbeResult

# the metrics of the quality-vs-bitrate figure, one panel each: (name, axis label); the second row is the voice
QUALITY_PANELS = (
    ("pesq_wb", "PESQ-WB (higher is better)"),
    ("stoi", "STOI (higher is better)"),
    ("mel_distance", "log-mel L1 distance (lower is better)"),
    ("si_sdr", "SI-SDR, dB (higher is better)"),
    ("voicing_recall", "voicing recall, Praat (higher is better)"),
    ("f0_error_cents", "median F0 error, cents (lower is better)"),
    ("hnr_drop_db", "HNR drop, dB (lower is better)"),
    ("dnsmos_ovrl", "DNSMOS OVRL (higher is better)"),
)
PANEL_COLUMNS = 4
FAMILY_STYLES = {
    "vqaudio": {"color": "tab:blue", "marker": "o"},
    "opus": {"color": "tab:orange", "marker": "s"},
    "codec2": {"color": "tab:green", "marker": "^"},
}
SPECTROGRAM_MAX_SECONDS = 8.0  # longer clips are shown from their start: details stay visible
SPECTROGRAM_HOP_LENGTH = 256  # with n_fft 1024 and 80 mels: the mel_distance analysis
# Narrow-band: a 64 ms window resolves harmonics 16 Hz apart, so voiced speech shows as separate lines and a
# whispery (noise-excited) resynthesis shows as a smear; wide-band (mel) spectrograms blur the two together.
NARROWBAND_WINDOW_SECONDS = 0.064
NARROWBAND_HOP_SECONDS = 0.010
NARROWBAND_MAX_HZ = 4000.0
NARROWBAND_RANGE_DB = 80.0  # shown below the reference's peak
NARROWBAND_SIZE = (360, 150)  # pixels (width, height)


class QualityPoint(NamedTuple):
    """One system in the quality-vs-bitrate figure.

    family: draws one line per family ("vqaudio", "opus", "codec2").
    label: annotation at the point (e.g. "nq4", "700C").
    kbps: x position.
    means: metric name -> mean over the clips (NaN: not available).
    ci95: metric name -> half-width of the 95% confidence interval (error bars).
    """

    family: str
    label: str
    kbps: float
    means: Mapping[str, float]
    ci95: Mapping[str, float]


def plot_quality_vs_bitrate(
    points: Sequence[QualityPoint],
    path: str | Path,
    title: str = "",
    references: Mapping[str, float] | None = None,
) -> None:
    """One panel per metric of ``QUALITY_PANELS`` against kbps, all systems on the same axes.

    The first row is reconstruction (PESQ-WB, STOI, mel distance, SI-SDR), the second the voice (voicing
    recall, F0 error, HNR drop, DNSMOS OVRL).

    Args:
        points: one per system.
        path: the PNG to write.
        title: figure title.
        references: metric -> the original audio's value, drawn as a dashed line (DNSMOS needs no reference).
    """
    references = references or {}
    rows = math.ceil(len(QUALITY_PANELS) / PANEL_COLUMNS)
    figure = Figure(figsize=(4.2 * PANEL_COLUMNS, 3.8 * rows + 0.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, PANEL_COLUMNS).reshape(-1)
    families = sorted({point.family for point in points}, key=lambda name: (name != "vqaudio", name))
    for ax, (metric, label) in zip(axes, QUALITY_PANELS, strict=True):
        drawn = False
        for family in families:
            members = sorted((p for p in points if p.family == family), key=lambda p: p.kbps)
            members = [p for p in members if math.isfinite(p.means.get(metric, math.nan))]
            if not members:
                continue
            style = FAMILY_STYLES.get(family, {"color": "tab:gray", "marker": "x"})
            ax.errorbar(
                [p.kbps for p in members],
                [p.means[metric] for p in members],
                yerr=[_finite(p.ci95.get(metric, 0.0)) for p in members],
                label=family,
                capsize=3,
                linewidth=1.5,
                **style,
            )
            for p in members:
                ax.annotate(
                    p.label,
                    (p.kbps, p.means[metric]),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=7,
                    color=style["color"],
                )
            drawn = True
        if metric in references:
            ax.axhline(references[metric], color="black", linestyle="--", linewidth=1, label="original")
            drawn = True
        ax.set_xscale("log")
        ax.set_xlabel("bitrate (kbit/s, log scale)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes)
    if title:
        figure.suptitle(title)
    figure.savefig(str(path), dpi=110)


def plot_codebook_usage(counts: np.ndarray, stats: Sequence[CodebookStats], path: str | Path) -> None:
    """One subplot per codebook: code frequencies sorted from most to least used (log scale).

    A flat curve at ``1 / codebook_size`` is a perfectly used codebook; a steep drop to zero shows dead codes.

    Args:
        counts: [K, codebook_size] code counts.
        stats: K CodebookStats of those counts (titles).
        path: the PNG to write.
    """
    num_codebooks, codebook_size = counts.shape
    columns = min(4, num_codebooks)
    rows = math.ceil(num_codebooks / columns)
    figure = Figure(figsize=(3.2 * columns, 2.4 * rows + 0.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = np.atleast_1d(figure.subplots(rows, columns, sharey=True, squeeze=False)).reshape(-1)
    ranks = np.arange(1, codebook_size + 1)
    for index, ax in enumerate(axes):
        if index >= num_codebooks:
            ax.set_axis_off()
            continue
        total = max(int(counts[index].sum()), 1)
        frequencies = np.sort(counts[index])[::-1] / total
        used = frequencies > 0
        ax.fill_between(ranks[used], frequencies[used], step="mid", alpha=0.4, color="tab:blue")
        ax.step(ranks[used], frequencies[used], where="mid", color="tab:blue", linewidth=1)
        ax.axhline(1 / codebook_size, color="tab:red", linestyle="--", linewidth=0.8, label="uniform")
        ax.set_yscale("log")
        ax.set_xlim(1, codebook_size)
        stat = stats[index]
        ax.set_title(
            f"codebook {index + 1}: {stat.used_fraction:.0%} used, ppl {stat.perplexity:.0f}/{codebook_size}",
            fontsize=8,
        )
        ax.set_xlabel("code rank", fontsize=8)
        if index % columns == 0:
            ax.set_ylabel("frequency", fontsize=8)
        ax.tick_params(labelsize=7)
    figure.suptitle("codebook usage (codes sorted by frequency; dashed: uniform)", fontsize=10)
    figure.savefig(str(path), dpi=100)


def plot_spectrograms(
    signals: Sequence[tuple[str, np.ndarray]], sample_rate: int, path: str | Path, title: str = ""
) -> None:
    """Log-mel spectrograms of the same clip, one row per signal, on one colour scale.

    Args:
        signals: (label, [T] audio at ``sample_rate``) pairs; the first is the reference (sets the scale).
        sample_rate: of all signals.
        path: the PNG to write.
        title: figure title.
    """
    if not signals:
        raise ValueError("plot_spectrograms() needs at least one signal")
    limit = int(SPECTROGRAM_MAX_SECONDS * sample_rate)
    mels = []
    for _, audio in signals:
        clip = np.asarray(audio, dtype=np.float32)[:limit]
        clip = clip if clip.size else np.zeros(1, np.float32)
        mels.append(log_mel_spectrogram(clip, sample_rate, hop_length=SPECTROGRAM_HOP_LENGTH).numpy())
    high = float(mels[0].max())
    low = high - 10.0  # natural log: ~87 dB of range below the reference's peak
    figure = Figure(figsize=(10, 1.9 * len(signals) + 0.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = np.atleast_1d(figure.subplots(len(signals), 1, sharex=True, squeeze=False)).reshape(-1)
    image = None
    for ax, (label, _), mel in zip(axes, signals, mels, strict=True):
        seconds = mel.shape[1] * SPECTROGRAM_HOP_LENGTH / sample_rate
        image = ax.imshow(
            mel,
            origin="lower",
            aspect="auto",
            vmin=low,
            vmax=high,
            cmap="magma",
            extent=(0.0, seconds, 0, mel.shape[0]),
        )
        ax.set_ylabel(label, fontsize=8)
        ax.set_yticks([])
    axes[-1].set_xlabel("time (s)")
    if image is not None:
        figure.colorbar(image, ax=list(axes), label="log mel magnitude", shrink=0.8)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.savefig(str(path), dpi=100)


def narrowband_spectrogram(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """[F, T] magnitude in dB (0 dB: a full-scale sine) from 0 to ``NARROWBAND_MAX_HZ``.

    A Hann window of ``NARROWBAND_WINDOW_SECONDS`` every ``NARROWBAND_HOP_SECONDS``; a clip shorter than one
    window is zero-padded to one frame.
    """
    window_length = round(NARROWBAND_WINDOW_SECONDS * sample_rate)
    hop_length = max(1, round(NARROWBAND_HOP_SECONDS * sample_rate))
    clip = np.asarray(audio, dtype=np.float64).reshape(-1)
    if clip.size < window_length:
        clip = np.pad(clip, (0, window_length - clip.size))
    window = np.hanning(window_length)
    frames = np.lib.stride_tricks.sliding_window_view(clip, window_length)[::hop_length] * window  # [T, W]
    bins = int(NARROWBAND_MAX_HZ * window_length / sample_rate) + 1
    magnitude = np.abs(np.fft.rfft(frames, axis=1))[:, :bins].T * 2 / window.sum()  # [F, T]
    return 20 * np.log10(np.maximum(magnitude, 1e-10))


def narrowband_images(
    signals: Sequence[np.ndarray], sample_rate: int, size: tuple[int, int] = NARROWBAND_SIZE
) -> list[bytes]:
    """PNG images of the narrow-band spectrograms of the same clip, on the colour scale of the first.

    Each image is the whole clip, 0 Hz at the bottom, ``NARROWBAND_MAX_HZ`` at the top, magma colours over
    ``NARROWBAND_RANGE_DB`` below the first signal's peak; 8-bit palette PNGs (a few tens of kB each).

    Args:
        signals: [T] audio at ``sample_rate``; the first is the reference (sets the scale).
        sample_rate: of all signals.
        size: (width, height) of every image in pixels.
    Returns:
        PNG bytes, one per signal.
    """
    if not signals:
        raise ValueError("narrowband_images() needs at least one signal")
    spectrograms = [narrowband_spectrogram(audio, sample_rate) for audio in signals]
    high = float(spectrograms[0].max())
    low = high - NARROWBAND_RANGE_DB
    colours = matplotlib.colormaps["magma"](np.linspace(0, 1, 256))[:, :3]
    palette = (colours * 255).round().astype(np.uint8).reshape(-1).tolist()
    images = []
    for decibels in spectrograms:
        levels = np.clip((decibels - low) / (high - low), 0, 1) * 255  # [F, T]
        image = Image.fromarray(levels[::-1].round().astype(np.uint8), mode="L")  # low frequencies down
        image = image.resize(size, Image.Resampling.BILINEAR)
        image.putpalette(palette)  # L -> P: the level is the colour index
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        images.append(buffer.getvalue())
    return images


PROBE_COLORS = {"pitch": "tab:gray", "codebook": "tab:blue", "kmeans": "tab:orange", "random": "tab:red"}


def plot_phonetic_probe(result: ProbeResult, path: str | Path, run_length_target: float = 2.0) -> None:
    """Three panels over the code streams of a phonetic probe: PNMI and phone purities, mean run length
    (the phone labels' own as a dotted line, ``run_length_target`` dashed), and the linear probes' test
    accuracy (the most-frequent-phone floor dashed).

    Args:
        result: ``vqaudio.evaluation.phonetic_probe.run_probe``'s result.
        path: the PNG to write.
    """
    rows = [row for row in result.codes if row.kind != "phones"]
    phones = [row for row in result.codes if row.kind == "phones"]
    names = [row.name for row in rows]
    positions = np.arange(len(rows))
    figure = Figure(figsize=(15, 0.32 * max(len(rows), len(result.linear) * 2) + 1.6), layout="constrained")
    FigureCanvasAgg(figure)
    purity_ax, run_ax, probe_ax = figure.subplots(1, 3)
    bars = (
        ("pnmi", "PNMI", 0.0),
        ("phone_purity", "phone purity", 1.0),
        ("heldout_phone_purity", "held-out phone purity", 2.0),
    )
    for field, label, offset in bars:
        values = [_finite(getattr(row, field)) for row in rows]
        purity_ax.barh(positions + (offset - 1) * 0.27, values, height=0.27, label=label)
    purity_ax.set_yticks(positions, names, fontsize=8)
    purity_ax.invert_yaxis()
    purity_ax.set_xlim(0, 1)
    purity_ax.set_xlabel("higher is better")
    purity_ax.legend(fontsize=7, loc="lower right")
    purity_ax.set_title("phone information per code stream", fontsize=9)
    colors = [PROBE_COLORS.get(row.kind, "tab:blue") for row in rows]
    run_ax.barh(positions, [row.mean_run_length for row in rows], color=colors)
    run_ax.axvline(run_length_target, color="black", linestyle="--", linewidth=0.8, label="target")
    if phones:
        run_ax.axvline(phones[0].mean_run_length, color="tab:green", linestyle=":", label="phone labels")
    run_ax.set_yticks(positions, names, fontsize=8)
    run_ax.invert_yaxis()
    run_ax.set_xlabel("mean run length (frames)")
    run_ax.legend(fontsize=7, loc="lower right")
    run_ax.set_title("frames per run of identical codes", fontsize=9)
    probe_positions = np.arange(len(result.linear))
    probe_ax.barh(probe_positions, [probe.test_accuracy for probe in result.linear], color="tab:purple")
    probe_ax.axvline(result.majority_accuracy, color="black", linestyle="--", linewidth=0.8, label="majority")
    probe_ax.set_yticks(probe_positions, [probe.name for probe in result.linear], fontsize=7)
    probe_ax.invert_yaxis()
    probe_ax.set_xlim(0, 1)
    probe_ax.set_xlabel("test frame accuracy (held-out utterances)")
    probe_ax.legend(fontsize=7, loc="lower right")
    probe_ax.set_title("linear probes to the phone", fontsize=9)
    figure.suptitle(
        f"phonetic probe of {result.model['name']}: {result.utterances} utterances, {result.frames} frames",
        fontsize=10,
    )
    figure.savefig(str(path), dpi=100)


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0
