"""vqaudio: speech to discrete tokens and back.

tok = vqaudio.Tokenizer.load("exp/run1")   # or no argument: the embedded default model
codes = tok.encode(wav, sample_rate)       # LongTensor [n_q, frames]
wav = tok.decode(codes)                    # float waveform at tok.sample_rate
data = vqaudio.compress("speech.wav")      # bytes of a .vqa file: tokens coded under the token prior
wav, sample_rate = vqaudio.decompress(data)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vqaudio import _moved
from vqaudio._version import __version__

if TYPE_CHECKING:
    from vqaudio.codec.tokenizer import Tokenizer
    from vqaudio.io.token_file import TokenCorpus, load_tokens
    from vqaudio.prior import Prior
    from vqaudio.prior.compression import compress, decompress

__all__ = ["Tokenizer", "Prior", "TokenCorpus", "load_tokens", "compress", "decompress", "__version__"]

_LAZY = {
    "Tokenizer": "vqaudio.codec.tokenizer",
    "Prior": "vqaudio.prior",
    "TokenCorpus": "vqaudio.io.token_file",
    "load_tokens": "vqaudio.io.token_file",
    "compress": "vqaudio.prior.compression",
    "decompress": "vqaudio.prior.compression",
}

_moved.install()  # the old module paths of 0.1 keep working for one release


def __getattr__(name: str) -> Any:
    """Import the heavy modules on first use, so ``import vqaudio`` stays fast."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vqaudio' has no attribute {name!r}")
