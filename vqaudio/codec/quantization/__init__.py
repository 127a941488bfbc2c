"""Quantizers: latents [B, D, F] <-> integer codes [B, K, F].

Two layouts behind the ``Quantizer`` interface (base.py): ``ResidualVQ`` (codebooks in sequence,
residual.py) and ``GroupVQ`` (codebooks side by side, group.py). Each stacks ``Codebook``s of one kind, one
file per kind: ``VectorQuantizer`` (nearest code, vq.py), ``GumbelQuantizer`` (Gumbel-softmax, gumbel.py),
``FiniteScalarQuantizer`` (FSQ, fsq.py); kinds.py maps ``model.quantizer.codebook`` to them. Every
codebook's settings travel as one ``CodebookOptions`` (base.py); ``build_quantizer`` turns a
``QuantizerConfig`` into a layout.
"""

from __future__ import annotations

from vqaudio.codec.quantization.base import Codebook, CodebookOptions, Quantizer, QuantizerOutput
from vqaudio.codec.quantization.fsq import FiniteScalarQuantizer
from vqaudio.codec.quantization.group import GroupVQ
from vqaudio.codec.quantization.gumbel import GumbelQuantizer, gumbel_temperature
from vqaudio.codec.quantization.kinds import build_codebook
from vqaudio.codec.quantization.residual import ResidualVQ
from vqaudio.codec.quantization.vq import VectorQuantizer
from vqaudio.config import QuantizerConfig
from vqaudio.errors import InputError

__all__ = [
    "Codebook",
    "CodebookOptions",
    "FiniteScalarQuantizer",
    "GroupVQ",
    "GumbelQuantizer",
    "Quantizer",
    "QuantizerOutput",
    "ResidualVQ",
    "VectorQuantizer",
    "build_codebook",
    "build_quantizer",
    "gumbel_temperature",
]


def build_quantizer(dim: int, config: QuantizerConfig) -> Quantizer:
    """The quantizer a config describes.

    Args:
        dim: D, channels of the encoder output (``ModelConfig.latent_dim``).
        config: ``kind`` picks the layout, ``codebook`` the kind of its codebooks; the other fields are their
            arguments.
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
