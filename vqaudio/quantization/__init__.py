"""Quantizers: latents [B, D, F] <-> integer codes [B, K, F].

One file per family behind the ``Quantizer`` interface (base.py): ``VectorQuantizer`` (one codebook,
vq.py), ``ResidualVQ`` (codebooks in sequence, residual.py), ``GroupVQ`` (codebooks side by side,
group.py). ``build_quantizer`` turns a ``QuantizerConfig`` into one of them.
"""

from __future__ import annotations

from typing import Any

from vqaudio.config import QuantizerConfig
from vqaudio.quantization.base import Quantizer, QuantizerOutput
from vqaudio.quantization.group import GroupVQ
from vqaudio.quantization.residual import ResidualVQ
from vqaudio.quantization.vq import VectorQuantizer

__all__ = ["Quantizer", "QuantizerOutput", "VectorQuantizer", "ResidualVQ", "GroupVQ", "build_quantizer"]


def build_quantizer(dim: int, config: QuantizerConfig) -> Quantizer:
    """The quantizer a config describes.

    Args:
        dim: D, channels of the encoder output (``ModelConfig.latent_dim``).
        config: ``kind`` picks the family; the other fields are its arguments.
    Returns:
        A ``ResidualVQ`` or ``GroupVQ`` of ``config.num_codebooks`` codebooks.
    """
    codebook_options: dict[str, Any] = {
        "codebook_size": config.codebook_size,
        "codebook_dim": config.codebook_dim,
        "commitment_weight": config.commitment_weight,
        "codebook_weight": config.codebook_weight,
        "ema": config.ema,
        "ema_decay": config.ema_decay,
        "laplace_epsilon": config.laplace_epsilon,
        "kmeans_init": config.kmeans_init,
        "kmeans_iters": config.kmeans_iters,
        "dead_code_steps": config.dead_code_steps,
    }
    if config.kind == "residual":
        return ResidualVQ(
            dim, config.num_codebooks, quantizer_dropout=config.quantizer_dropout, **codebook_options
        )
    if config.kind == "group":
        return GroupVQ(dim, config.num_codebooks, **codebook_options)
    raise ValueError(f"quantizer.kind must be 'residual' or 'group', got {config.kind!r}")
