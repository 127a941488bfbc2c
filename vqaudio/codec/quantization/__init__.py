"""Quantizers: latents [B, D, F] <-> integer codes [B, K, F].

One file per family behind the ``Quantizer`` interface (base.py): ``VectorQuantizer`` (one codebook,
vq.py), ``ResidualVQ`` (codebooks in sequence, residual.py), ``GroupVQ`` (codebooks side by side,
group.py). Every codebook's settings travel as one ``CodebookOptions`` (vq.py); ``build_quantizer`` turns a
``QuantizerConfig`` into one of the families.
"""

from __future__ import annotations

from vqaudio.codec.quantization.base import Quantizer, QuantizerOutput
from vqaudio.codec.quantization.group import GroupVQ
from vqaudio.codec.quantization.residual import ResidualVQ
from vqaudio.codec.quantization.vq import CodebookOptions, VectorQuantizer
from vqaudio.config import QuantizerConfig
from vqaudio.errors import InputError

__all__ = [
    "CodebookOptions",
    "GroupVQ",
    "Quantizer",
    "QuantizerOutput",
    "ResidualVQ",
    "VectorQuantizer",
    "build_quantizer",
]


def build_quantizer(dim: int, config: QuantizerConfig) -> Quantizer:
    """The quantizer a config describes.

    Args:
        dim: D, channels of the encoder output (``ModelConfig.latent_dim``).
        config: ``kind`` picks the family; the other fields are its arguments.
    Returns:
        A ``ResidualVQ`` or ``GroupVQ`` of ``config.num_codebooks`` codebooks.
    """
    options = CodebookOptions.from_config(config)
    if config.kind == "residual":
        return ResidualVQ(dim, config.num_codebooks, options, quantizer_dropout=config.quantizer_dropout)
    if config.kind == "group":
        return GroupVQ(dim, config.num_codebooks, options)
    raise InputError(
        f"quantizer.kind must be 'residual' or 'group', got {config.kind!r}; "
        "set model.quantizer.kind in the recipe to one of them"
    )
