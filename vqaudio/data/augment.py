"""Speaker and level variety from a small corpus: speed and gain perturbation of training crops.

Resampling a crop by a factor r (played at the original rate) scales its pitch and formants by r, as a
shorter or longer vocal tract would: the cheap way to turn a few voices into many (Ko et al. 2015, "Audio
Augmentation for Speech Recognition", the 0.9/1.0/1.1 speed perturbation of Kaldi recipes). A random gain
keeps the tokens from depending on the recording level. (On the two-voice fillets corpus it did not widen the
first codebook's use on unseen voices: docs/EXPERIMENTS.md, "Random speed and gain per crop".)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import soxr

from vqaudio.config import ConfigError

# Extra source samples resampled on each side of a crop so that the resampler's edge transients fall outside.
EDGE_SAMPLES = 64


@dataclass(frozen=True)
class Augmentation:
    """Per-crop random speed factor and gain, each drawn uniformly from its range.

    speed: (low, high) resampling factors; > 1 is faster and higher-pitched. (1, 1): off.
    gain_db: (low, high) gain in dB, lowered where it would clip the crop. (0, 0): off.
    """

    speed: tuple[float, float] = (1.0, 1.0)
    gain_db: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        low, high = self.speed
        if not 0.5 <= low <= high <= 2.0:
            raise ConfigError(
                f"train.speed_perturbation must be [low, high] with 0.5 <= low <= high <= 2, got {list(self.speed)}; "
                "[0.9, 1.1] is the usual range, [1, 1] turns it off"
            )
        low, high = self.gain_db
        if not -60.0 <= low <= high <= 60.0:
            raise ConfigError(
                f"train.gain_perturbation_db must be [low, high] in dB with low <= high, got {list(self.gain_db)}; "
                "e.g. [-10, 6], or [0, 0] to turn it off"
            )

    @property
    def enabled(self) -> bool:
        return self.speed != (1.0, 1.0) or self.gain_db != (0.0, 0.0)

    def draw(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        """``count`` speed factors and gains in dB."""
        return rng.uniform(*self.speed, size=count), rng.uniform(*self.gain_db, size=count)


def source_samples(segment_samples: int, speed: float) -> int:
    """Samples to read for a crop of ``segment_samples`` at ``speed``, edges included."""
    return math.ceil(segment_samples * speed) + 2 * EDGE_SAMPLES


def perturb(source: np.ndarray, segment_samples: int, speed: float, gain_db: float) -> np.ndarray:
    """A crop of at most ``segment_samples`` from ``source`` (read with ``source_samples``), sped up by
    ``speed`` and scaled by ``gain_db`` (less where the peak would pass full scale).

    A source shorter than requested (the end of a file) gives a shorter crop.
    """
    audio = source.astype(np.float32, copy=False)
    if speed != 1.0:
        # Read as if recorded at speed x the rate, resampled back: every frequency scales by ``speed``.
        audio = soxr.resample(audio, speed * 1000.0, 1000.0, quality="HQ")
    start = round(EDGE_SAMPLES / speed)
    audio = audio[start : start + segment_samples]
    if gain_db != 0.0 and audio.size:
        peak = float(np.abs(audio).max())
        gain = 10.0 ** (gain_db / 20.0)
        if peak * gain > 0.999:
            gain = 0.999 / max(peak, 1e-9)
        audio = audio * np.float32(gain)
    return np.ascontiguousarray(audio, dtype=np.float32)
