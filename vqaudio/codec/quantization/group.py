"""Group (product) vector quantization: one codebook per slice of the channels.

Jégou et al. 2011, "Product Quantization for Nearest Neighbor Search"; used for speech units by
Baevski et al. 2020, "wav2vec 2.0" (G codebooks, one code each per frame). The D channels are split into
G groups of D / G; group g is quantized by its own codebook, so a frame costs G codes that together
index C^G vectors. Unlike residual VQ the codes are not ordered coarse to fine, so every frame needs all
G of them: ``n_q`` is not a knob here.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from vqaudio.codec.quantization.base import (
    Codebook,
    CodebookOptions,
    Quantizer,
    QuantizerOutput,
    check_codes,
    check_latents,
    check_options,
)
from vqaudio.codec.quantization.kinds import build_codebook
from vqaudio.errors import InputError


class GroupVQ(Quantizer):
    """G codebooks side by side: latents [B, D, F] -> codes [B, G, F].

    Args:
        dim: D, channels of the latents; must be divisible by ``num_codebooks``.
        num_codebooks: G, the number of groups.
        options: the settings of every group's codebook (of kind ``options.codebook``, over D / G channels;
            ``codebook_dim`` None means D / G).
    """

    def __init__(self, dim: int, num_codebooks: int, options: CodebookOptions = CodebookOptions()) -> None:
        super().__init__()
        options = check_options(options, "GroupVQ")
        if num_codebooks < 1 or dim % num_codebooks:
            raise InputError(
                f"GroupVQ: dim={dim} must split into num_codebooks={num_codebooks} equal groups; "
                "choose a dim divisible by num_codebooks"
            )
        self.dim = dim
        self.num_codebooks = num_codebooks
        self.codebook_size = options.codebook_size
        self.options = options
        self.group_dim = dim // num_codebooks
        self.groups = nn.ModuleList(build_codebook(self.group_dim, options) for _ in range(num_codebooks))

    def forward(self, z: Tensor, n_q: int | None = None) -> QuantizerOutput:
        """Quantize every group; in training mode also update the codebooks.

        Args:
            z: [B, D, F] latents.
            n_q: None or G (every group is always used).
        Returns:
            QuantizerOutput with codes [B, G, F] and per-group losses [G].
        """
        check_latents(z, self.dim, "GroupVQ.forward()")
        self._check_n_q(n_q, "GroupVQ.forward()")
        outs = [
            group.quantize(part)
            for group, part in zip(self._groups(), z.split(self.group_dim, dim=1), strict=True)
        ]
        return QuantizerOutput(
            quantized=torch.cat([out.quantized for out in outs], dim=1),  # [B, D, F]
            codes=torch.stack([out.codes for out in outs], dim=1),  # [B, G, F]
            loss=torch.stack([out.loss for out in outs]).sum(),
            commitment_loss=torch.stack([out.commitment_loss for out in outs]),
            codebook_loss=torch.stack([out.codebook_loss for out in outs]),
        )

    @torch.no_grad()
    def encode(self, z: Tensor, n_q: int | None = None) -> Tensor:
        """[B, D, F] latents -> [B, G, F] int64 codes (never changes the codebooks)."""
        check_latents(z, self.dim, "GroupVQ.encode()")
        self._check_n_q(n_q, "GroupVQ.encode()")
        parts = z.split(self.group_dim, dim=1)
        return torch.stack(
            [group.lookup(part) for group, part in zip(self._groups(), parts, strict=True)], dim=1
        )

    def decode(self, codes: Tensor) -> Tensor:
        """[B, G, F] integer codes -> [B, D, F] quantized latents."""
        codes = check_codes(
            codes, self.codebook_size, self.num_codebooks, self.num_codebooks, "GroupVQ.decode()"
        )
        return torch.cat([group.embed(codes[:, index]) for index, group in enumerate(self._groups())], dim=1)

    @torch.no_grad()
    def codebooks(self) -> Tensor:
        """[G, C, codebook_dim] every group's code vectors."""
        return torch.cat([group.codebooks() for group in self._groups()])

    @torch.no_grad()
    def latent_codebooks(self) -> Tensor:
        """[G, C, D] every group's code vectors in its own slice of the D channels, 0 elsewhere, so that the
        concatenation ``decode`` makes is also a sum over groups."""
        vectors = [group.latent_codebooks()[0] for group in self._groups()]  # G x [C, D / G]
        full = vectors[0].new_zeros(self.num_codebooks, self.codebook_size, self.dim)
        for index, group_vectors in enumerate(vectors):
            full[index, :, index * self.group_dim : (index + 1) * self.group_dim] = group_vectors
        return full

    def _groups(self) -> list[Codebook]:
        return cast(list[Codebook], list(self.groups))

    def _check_n_q(self, n_q: int | None, caller: str) -> None:
        if n_q is not None and n_q != self.num_codebooks:
            raise InputError(
                f"{caller}: group VQ needs all num_codebooks={self.num_codebooks} codes of a frame, so n_q "
                f"must be None or {self.num_codebooks}, got {n_q!r}; for a variable bitrate use "
                "quantizer.kind='residual'"
            )
