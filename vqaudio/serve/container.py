"""The ``.vqa`` container, as the service sees it: a thin adapter over ``vqaudio.compress`` /
``vqaudio.decompress`` (issue 27, the ``vqaudio compress`` part), looked up when a request needs them.

While this installation has no ``vqaudio.compress``, ``available()`` is False and the service answers
``/v1/compress`` and ``.vqa`` bodies to ``/v1/resynth`` with 501. The calls below are the only place that
knows the container's Python API. TODO(issue 27): check them against ``vqaudio.compress`` when it is merged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.errors import VQAudioError

UNAVAILABLE = (
    "the .vqa container is not part of this vqaudio installation (it has no vqaudio.compress); send codes as "
    "JSON to /v1/resynth, or upgrade vqaudio"
)


class ContainerUnavailable(VQAudioError):
    """This installation has no ``vqaudio.compress`` / ``vqaudio.decompress``."""


def _functions() -> tuple[Callable[..., Any], Callable[..., Any]] | None:
    import vqaudio

    compress, decompress = getattr(vqaudio, "compress", None), getattr(vqaudio, "decompress", None)
    if callable(compress) and callable(decompress):
        return compress, decompress
    return None


def available() -> bool:
    """Whether ``vqaudio.compress`` and ``vqaudio.decompress`` can be called here."""
    return _functions() is not None


def require() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """(compress, decompress), or ContainerUnavailable."""
    functions = _functions()
    if functions is None:
        raise ContainerUnavailable(UNAVAILABLE)
    return functions


def compress(tokenizer: Tokenizer, wav: torch.Tensor, n_q: int | None) -> bytes:
    """Mono float32 audio [T] at the model's rate -> the bytes of a ``.vqa`` container."""
    compress_function, _ = require()
    data = compress_function(wav.numpy(), tokenizer.sample_rate, n_q=n_q, tokenizer=tokenizer)
    return bytes(data)


def decompress(tokenizer: Tokenizer, data: bytes) -> np.ndarray:
    """The bytes of a ``.vqa`` container -> float32 audio [T] at the model's rate.

    ``vqaudio.decompress`` may return the audio, or (audio, sample_rate).
    """
    _, decompress_function = require()
    result = decompress_function(data, tokenizer=tokenizer)
    audio = result[0] if isinstance(result, tuple) else result
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().float().cpu().numpy()
    return np.asarray(audio, dtype=np.float32).reshape(-1)
