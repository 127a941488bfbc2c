"""The ``.vqa`` container, as the service sees it: ``vqaudio.compress`` / ``vqaudio.decompress`` (the coder is
the optional extra ``compress``: constriction), looked up when a request needs them.

Where constriction is not installed, ``available()`` is False and the service answers ``/v1/compress`` and
``.vqa`` bodies to ``/v1/resynth`` with 501.
"""

from __future__ import annotations

import numpy as np
import torch

from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.errors import VQAudioError
from vqaudio.optional import is_installed

UNAVAILABLE = (
    "the .vqa container needs the range coder of the 'compress' extra, which this server lacks "
    "(pip install 'vqaudio[compress]'); send codes as JSON to /v1/resynth"
)


class ContainerUnavailable(VQAudioError):
    """This installation cannot code ``.vqa`` containers (constriction is missing)."""


def available() -> bool:
    """Whether ``.vqa`` containers can be written and read here."""
    return is_installed("constriction")


def require() -> None:
    """Return quietly, or raise ContainerUnavailable."""
    if not available():
        raise ContainerUnavailable(UNAVAILABLE)


def compress(tokenizer: Tokenizer, wav: torch.Tensor, n_q: int | None) -> bytes:
    """Mono float32 audio [T] at the model's rate -> the bytes of a ``.vqa`` container."""
    require()
    from vqaudio.prior.compression import compress as compress_audio

    return bytes(compress_audio(wav.numpy(), tokenizer.sample_rate, n_q=n_q, tokenizer=tokenizer))


def decompress(tokenizer: Tokenizer, data: bytes) -> np.ndarray:
    """The bytes of a ``.vqa`` container -> float32 audio [T] at the model's rate."""
    require()
    from vqaudio.prior.compression import decompress as decompress_audio

    audio, _ = decompress_audio(data, tokenizer=tokenizer)
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().float().cpu().numpy()
    return np.asarray(audio, dtype=np.float32).reshape(-1)
