"""What every clip metric shares: its two exceptions and the checks on its input.

``metrics`` (the signal metrics and ``score_clip``) and ``voice`` (Praat, DNSMOS, word error rate) both raise
these, so they live below both.
"""

from __future__ import annotations

import numpy as np
import torch

# A reference quieter than this (RMS, about -100 dBFS) is treated as silence: spectral convergence divides by
# its magnitude and STOI removes every frame, so neither is defined on it.
SILENCE_RMS = 1e-5


class MetricError(Exception):
    """A metric that is undefined on this clip (e.g. PESQ on silence); the message says why."""


class MetricUnavailable(Exception):
    """A metric whose package is not installed; the message says how to install it."""


def check_not_silent(audio: np.ndarray, metric: str, which: str = "reference") -> None:
    """Raise MetricError when ``audio`` is silent (RMS below ``SILENCE_RMS``)."""
    if float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) < SILENCE_RMS:
        raise MetricError(f"the {which} is silent, {metric} is undefined")


def mono_clip(value: np.ndarray | torch.Tensor, name: str, caller: str) -> np.ndarray:
    """Validate one clip and convert it to a contiguous float32 numpy array [T]."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise TypeError(
            f"{caller}() expects {name} as a numpy array or torch tensor, got {type(value).__name__}"
        )
    if not np.issubdtype(value.dtype, np.floating):
        raise TypeError(f"{caller}() expects float audio, got {name} of dtype {value.dtype}")
    if value.ndim != 1 or value.shape[0] < 1:
        raise ValueError(f"{caller}() expects mono audio [T] with T >= 1, got {name} of shape {value.shape}")
    return np.ascontiguousarray(value, dtype=np.float32)


def clip_pair(
    estimate: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor, caller: str
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert to contiguous float32 numpy [T] arrays of equal length."""
    est = mono_clip(estimate, "estimate", caller)
    ref = mono_clip(reference, "reference", caller)
    if est.shape != ref.shape:
        raise ValueError(
            f"{caller}() expects estimate and reference of the same length, got {est.shape[0]} and "
            f"{ref.shape[0]} samples; align them first (vqaudio.evaluation.alignment.align_to_reference)"
        )
    return est, ref
