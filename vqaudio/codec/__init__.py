"""The codec: a 1D-conv VQ-VAE that turns 16 kHz speech into tokens ``[n_codebooks, frames]`` and back.

Read top to bottom, as the signal flows:

* ``conv`` (padded causal / non-causal convolutions), ``seanet`` (residual units, encoder and decoder
  blocks), ``istft`` (the iSTFT head and its optional harmonic excitation), ``pitch`` (F0 and voicing);
* ``quantization`` (one file per quantizer family behind one interface: ``vq``, ``residual``, ``group``);
* ``vqvae`` (``VQVAE``: front-end + encoder + quantizer + decoder; ``build_model``);
* ``tokenizer`` (``Tokenizer``: model files, resampling, batching) and ``windows`` (long inputs in exact
  windows);
* ``corpus_coding`` (whole corpora to token files and back, shardable);
* ``losses``, ``discriminators``, ``validation`` and ``training`` (the codec's training step on the shared
  run machinery of ``vqaudio.training``).

``from vqaudio.codec import Tokenizer`` imports torch on first use only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vqaudio.codec.tokenizer import Tokenizer
    from vqaudio.codec.vqvae import VQVAE, build_model

__all__ = ["Tokenizer", "VQVAE", "build_model"]

_LAZY = {
    "Tokenizer": "vqaudio.codec.tokenizer",
    "VQVAE": "vqaudio.codec.vqvae",
    "build_model": "vqaudio.codec.vqvae",
}


def __getattr__(name: str) -> Any:
    """Import the torch modules on first use, so ``import vqaudio.codec.pitch`` alone stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vqaudio.codec' has no attribute {name!r}")
