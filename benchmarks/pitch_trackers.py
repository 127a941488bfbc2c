"""Which F0 tracker should feed the tokens' pitch row? Each candidate against Praat on the same clips.

Praat's autocorrelation pitch (praat-parselmouth, 10 ms, 60-500 Hz) is the reference, as in ``vqaudio eval``.
For each tracker: voicing recall and precision against Praat's voiced frames, the gross error rate (share of
frames both call voiced that are more than 50 cents off) and the median error in cents on those frames, and
the speed in multiples of real time on one thread. Candidates: the in-house YIN/NCCF estimator
(``vqaudio.codec.pitch``, frame-local, vectorised torch), pyworld's DIO + StoneMask and Harvest.

    python benchmarks/pitch_trackers.py data/pocketsphinx/clips
    python benchmarks/pitch_trackers.py data/fillets/corpus/dev --max-files 200 --voicing 0.6,0.6:0.45,0.5:0.5

``--voicing`` sweeps the in-house estimator's voicing thresholds, each ``NCCF[:DIP]`` (the NCCF at the period
and YIN's dip depth; tune them on dev voices, report on test voices). Needs ``pip install praat-parselmouth pyworld`` (pyworld also needs ``setuptools<81``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vqaudio.codec import pitch as pitch_module
from vqaudio.data.utterance import find_audio_files
from vqaudio.features import frame_signal
from vqaudio.io.audio import load_audio

SAMPLE_RATE = 16000
HOP = 160  # 10 ms, Praat's time step
Track = tuple[np.ndarray, np.ndarray]  # frame times (s), F0 in Hz (0 where unvoiced)


def praat(audio: np.ndarray) -> Track:
    import parselmouth

    pitch = parselmouth.Sound(audio.astype(np.float64), SAMPLE_RATE).to_pitch_ac(
        time_step=0.01, pitch_floor=60, pitch_ceiling=500
    )
    return pitch.xs(), pitch.selected_array["frequency"]


def in_house(audio: np.ndarray, window: int = 640) -> Track:
    frames = frame_signal(
        torch.from_numpy(audio)[None], window, HOP, window // 2
    )  # frame i centred on i * HOP
    estimate = pitch_module.estimate_pitch(frames, SAMPLE_RATE)
    f0 = estimate.f0[0].double().numpy() * estimate.voiced[0].numpy()
    return np.arange(len(f0)) * HOP / SAMPLE_RATE, f0


def dio(audio: np.ndarray) -> Track:
    import pyworld

    samples = audio.astype(np.float64)
    f0, times = pyworld.dio(samples, SAMPLE_RATE, f0_floor=50, f0_ceil=550, frame_period=10)
    return times, pyworld.stonemask(samples, f0, times, SAMPLE_RATE)


def harvest(audio: np.ndarray) -> Track:
    import pyworld

    f0, times = pyworld.harvest(
        audio.astype(np.float64), SAMPLE_RATE, f0_floor=50, f0_ceil=550, frame_period=10
    )
    return times, f0


def agreement(references: list[Track], estimates: list[Track]) -> dict[str, float]:
    """Voicing recall / precision, gross error rate and median error (cents) of estimates against references."""
    hits = false_alarms = misses = 0
    errors = []
    for (ref_times, ref_f0), (times, f0) in zip(references, estimates, strict=True):
        step = times[1] - times[0] if len(times) > 1 else 0.01
        index = np.clip(np.round((ref_times - times[0]) / step).astype(int), 0, len(f0) - 1)
        estimate = f0[index]
        ref_voiced, voiced = ref_f0 > 0, estimate > 0
        hits += int((ref_voiced & voiced).sum())
        false_alarms += int((~ref_voiced & voiced).sum())
        misses += int((ref_voiced & ~voiced).sum())
        both = ref_voiced & voiced
        errors.append(np.abs(1200 * np.log2(estimate[both] / ref_f0[both])))
    cents = np.concatenate(errors) if errors else np.zeros(0)
    return {
        "recall": hits / max(1, hits + misses),
        "precision": hits / max(1, hits + false_alarms),
        "gross": float((cents > 50).mean()) if cents.size else float("nan"),
        "median_cents": float(np.median(cents)) if cents.size else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", type=Path, help="a folder of audio files (searched recursively)")
    parser.add_argument(
        "--max-files", type=int, default=0, help="at most this many files, evenly spread (0: all)"
    )
    parser.add_argument(
        "--voicing", default="", help="comma-separated NCCF[:DIP] thresholds for the in-house tracker"
    )
    parser.add_argument("--no-world", action="store_true", help="skip the pyworld trackers")
    parser.add_argument("--no-harvest", action="store_true", help="skip Harvest (about real time)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    paths = sorted(p for p in find_audio_files(args.folder) if p.suffix.lower() in (".wav", ".flac"))
    if args.max_files and len(paths) > args.max_files:
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, args.max_files).astype(int)]
    if not paths:
        raise SystemExit(f"{args.folder}: no .wav or .flac files")
    audio = [load_audio(path, SAMPLE_RATE).numpy() for path in paths]
    seconds = sum(len(a) for a in audio) / SAMPLE_RATE
    references = [praat(a) for a in audio]
    print(
        f"{len(paths)} files, {seconds:.1f} s; Praat calls {sum(int((f > 0).sum()) for _, f in references)} frames voiced"
    )
    trackers: dict[str, Callable[[np.ndarray], Track]] = {"in-house YIN/NCCF": in_house}
    if not args.no_world:
        trackers.update({"pyworld DIO + StoneMask": dio, "pyworld Harvest": harvest})
    if args.no_harvest:
        trackers.pop("pyworld Harvest", None)
    print(
        "| tracker | voicing recall | voicing precision | gross errors (> 50 cents) | median error (cents) | x real time |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, track in trackers.items():
        start = time.perf_counter()
        estimates = [track(a) for a in audio]
        speed = seconds / (time.perf_counter() - start)
        scores = agreement(references, estimates)
        print(
            f"| {name} | {scores['recall']:.3f} | {scores['precision']:.3f} | {scores['gross']:.3f} | "
            f"{scores['median_cents']:.1f} | {speed:.0f}x |"
        )
    defaults = pitch_module.VOICING_THRESHOLD, pitch_module.VOICED_DIP
    for setting in [s for s in args.voicing.split(",") if s]:
        nccf, _, dip = setting.partition(":")
        pitch_module.VOICING_THRESHOLD = float(nccf)
        pitch_module.VOICED_DIP = float(dip) if dip else defaults[1]
        try:
            scores = agreement(references, [in_house(a) for a in audio])
        finally:
            pitch_module.VOICING_THRESHOLD, pitch_module.VOICED_DIP = defaults
        print(
            f"| in-house, NCCF {nccf}, dip {dip or defaults[1]} | {scores['recall']:.3f} | {scores['precision']:.3f} | "
            f"{scores['gross']:.3f} | {scores['median_cents']:.1f} | |"
        )


if __name__ == "__main__":
    main()
