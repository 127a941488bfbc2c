"""The codebook kinds the layouts stack (``model.quantizer.codebook``): one name, one class."""

from __future__ import annotations

from collections.abc import Callable

from vqaudio.codec.quantization.base import Codebook, CodebookOptions, check_options
from vqaudio.codec.quantization.fsq import FiniteScalarQuantizer
from vqaudio.codec.quantization.gumbel import GumbelQuantizer
from vqaudio.codec.quantization.vq import VectorQuantizer

CODEBOOK_CLASSES: dict[str, Callable[[int, CodebookOptions], Codebook]] = {
    "vq": VectorQuantizer,
    "gumbel": GumbelQuantizer,
    "fsq": FiniteScalarQuantizer,
}


def build_codebook(dim: int, options: CodebookOptions) -> Codebook:
    """One codebook of kind ``options.codebook`` over latents of ``dim`` channels."""
    options = check_options(options, "build_codebook()")
    return CODEBOOK_CLASSES[options.codebook](dim, options)
