"""vqaudio: speech to discrete tokens and back.

tok = vqaudio.Tokenizer.load("exp/run1")   # or no argument: the embedded default model
codes = tok.encode(wav, sample_rate)       # LongTensor [n_q, frames]
wav = tok.decode(codes)                    # float waveform at tok.sample_rate
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vqaudio import _moved
from vqaudio._version import __version__

if TYPE_CHECKING:
    from vqaudio.codec.tokenizer import Tokenizer
    from vqaudio.io.token_file import TokenCorpus, load_tokens
    from vqaudio.prior import Prior

__all__ = ["Tokenizer", "Prior", "TokenCorpus", "load_tokens", "__version__"]

_LAZY = {
    "Tokenizer": "vqaudio.codec.tokenizer",
    "Prior": "vqaudio.prior",
    "TokenCorpus": "vqaudio.io.token_file",
    "load_tokens": "vqaudio.io.token_file",
}

_moved.install()  # the old module paths of 0.1 keep working for one release


def __getattr__(name: str) -> Any:
    """Import the heavy modules on first use, so ``import vqaudio`` stays fast."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vqaudio' has no attribute {name!r}")
