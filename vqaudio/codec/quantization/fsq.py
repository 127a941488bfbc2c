"""One finite-scalar-quantization codebook: each of a few dimensions rounded to a few levels.

Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple": project the latent to d dimensions,
squash dimension i into L_i equal steps with a tanh, round (straight-through), and read the d rounded values
as one code: the mixed-radix number ``sum_i index_i * prod_{j<i} L_j``, so the implicit codebook is the grid
of ``prod(L_i)`` points (``fsq_levels`` [8, 8, 4, 4] = 1024 codes), and a linear map takes the grid point
back to the latent space. The grid is fixed, so no code dies for want of updates: no codebook loss, no
commitment loss, no EMA, no k-means, no restarts (only the input map is standardised on the first training
batch).

Dimension i with L levels (h the projected value)::

    bounded = (L - 1) / 2 * tanh(h)            in (-(L - 1) / 2, (L - 1) / 2)
    index   = round(bounded + (L - 1) / 2)     in {0, ..., L - 1}        (the digit of the code)
    level   = (index - (L - 1) / 2) / ((L - 1) / 2)   in [-1, 1], L points 2 / (L - 1) apart

Even L gives half-integer steps (a grid symmetric about 0, without 0 itself), odd L integer ones.

Nothing bounds the input, though: in a 1,000-step comparison (docs/EXPERIMENTS.md, 2026-12-07) the encoder's
latents grew until every stage's tanh sat at its ends, and each stage used a handful of its codes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vqaudio.codec.quantization.base import (
    Codebook,
    CodebookOptions,
    CodebookOutput,
    check_integer,
    check_options,
    masked_mean,
    standardise_outputs,
)


class FiniteScalarQuantizer(Codebook):
    """One FSQ codebook: latents [B, D, F] -> one code per frame, codes [B, 1, F], ``prod(fsq_levels)`` codes.

    Args:
        dim: D, channels of the latents.
        options: ``fsq_levels`` (one per projected dimension; ``codebook_size`` must be their product); the
            settings of the other kinds are ignored.
    """

    levels: Tensor
    radix: Tensor

    def __init__(self, dim: int, options: CodebookOptions) -> None:
        super().__init__()
        options = check_options(options, "FiniteScalarQuantizer")
        check_integer(dim, "dim", "FiniteScalarQuantizer")
        if dim < 1:
            raise ValueError(f"FiniteScalarQuantizer: dim must be at least 1, got {dim}")
        if options.codebook != "fsq":  # fsq_levels are checked against codebook_size for codebook='fsq' only
            raise ValueError(
                "FiniteScalarQuantizer expects CodebookOptions(codebook='fsq', ...), "
                f"got codebook={options.codebook!r}"
            )
        self.dim = dim
        self.codebook_size = options.codebook_size
        self.options = options
        levels = options.fsq_levels
        self.grid_dim = len(levels)  # d
        self.project_in = nn.Linear(dim, self.grid_dim)
        self.project_out = nn.Linear(self.grid_dim, dim)
        # Derived from the config, so not part of the weights (persistent=False): [d] levels, [d] place values.
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.float32), persistent=False)
        radix = [math.prod(levels[:index]) for index in range(len(levels))]
        self.register_buffer("radix", torch.tensor(radix, dtype=torch.long), persistent=False)
        # project_in is standardised on the first training batch (``standardise_outputs``), so the grid's levels
        # are used from the start rather than the few an untrained encoder's common offset lands on.
        self.register_buffer("initialized", torch.tensor(False))

    # ---------------------------------------------------------------------------------------------- public
    @torch.no_grad()
    def codebooks(self) -> Tensor:
        """[1, C, d] every code's grid point (levels in [-1, 1]), in code order."""
        codes = torch.arange(self.codebook_size, device=self.radix.device)
        return self._grid_point(self._digits(codes))[None].to(self.project_out.weight.dtype)

    @torch.no_grad()
    def latent_codebooks(self) -> Tensor:
        """[1, C, D] every code's grid point projected to the latent space (``project_out``, bias included)."""
        codes = torch.arange(self.codebook_size, device=self.radix.device)[None]  # [1, C]
        return self.embed(codes).transpose(1, 2).clone()  # [1, D, C] -> [1, C, D]

    # ------------------------------------------------------------------ building blocks of the layouts
    def quantize(
        self, z: Tensor, active: Tensor | None = None, loss_input: Tensor | None = None
    ) -> CodebookOutput:
        """Quantize [B, D, F] latents (see ``Codebook``); the same in training and eval.

        ``loss_input`` is not needed: FSQ has no loss, and the gradient reaches ``z`` through the rounding's
        straight-through estimator. The reported commitment and codebook losses are the mean squared rounding
        error on the [-1, 1] grid (detached).
        """
        batch_size, _, num_frames = z.shape
        with torch.autocast(device_type=z.device.type, enabled=False):
            x = self._frames(z)  # [N, D]
            if self.training and not self._is_initialized():
                standardise_outputs(self.project_in, x.detach())
                self.initialized.fill_(True)
                self._initialized_seen = True
            bounded = self._bound(x)  # [N, d]
            digits = self._round(bounded)  # [N, d] integer-valued floats
            half = (self.levels - 1) / 2  # [d]
            # Straight-through rounding: the value is exactly the grid point (bounded - sg(bounded) is 0),
            # the gradient w.r.t. bounded the identity.
            level = (digits - half + (bounded - bounded.detach())) / half
            quantized = self._unproject(level, batch_size)
            weights = None
            if active is not None:
                weights = active[:, None].expand(batch_size, num_frames).reshape(-1).to(level.dtype)  # [N]
            error = masked_mean(((bounded.detach() - digits + half) / half).pow(2).mean(dim=1), weights)
        return CodebookOutput(
            quantized=quantized,
            codes=self._codes(digits).reshape(batch_size, num_frames),
            loss=error.new_zeros(()),
            commitment_loss=error,
            codebook_loss=error,
        )

    @torch.no_grad()
    def lookup(self, z: Tensor) -> Tensor:
        """[B, D, F] latents -> [B, F] int64 codes (deterministic)."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            codes = self._codes(self._round(self._bound(self._frames(z))))
        return codes.reshape(z.shape[0], z.shape[2])

    def embed(self, codes: Tensor) -> Tensor:
        """[B, F] int64 codes -> [B, D, F] grid points projected to the latent space."""
        with torch.autocast(device_type=codes.device.type, enabled=False):
            level = self._grid_point(self._digits(codes.reshape(-1)))  # [B * F, d]
            return self._unproject(level.to(self.project_out.weight.dtype), codes.shape[0])

    # ----------------------------------------------------------------------------------------- private
    def _frames(self, z: Tensor) -> Tensor:
        """[B, D, F] latents -> [B * F, D] rows, in the weights' dtype."""
        return z.transpose(1, 2).reshape(-1, self.dim).to(self.project_in.weight.dtype)

    def _bound(self, x: Tensor) -> Tensor:
        """[N, D] rows -> [N, d] projected values squashed into (-(L - 1) / 2, (L - 1) / 2)."""
        return (self.levels - 1) / 2 * torch.tanh(self.project_in(x))

    def _round(self, bounded: Tensor) -> Tensor:
        """[N, d] bounded values -> [N, d] digits 0..L-1 (floats; clamped against tanh reaching +-1)."""
        half = (self.levels - 1) / 2
        return torch.minimum(torch.round(bounded.detach() + half).clamp_min(0), self.levels - 1)

    def _codes(self, digits: Tensor) -> Tensor:
        """[N, d] digits -> [N] int64 mixed-radix codes (the first dimension varies fastest)."""
        return (digits.long() * self.radix).sum(dim=1)

    def _digits(self, codes: Tensor) -> Tensor:
        """[N] int64 codes -> [N, d] digits (int64)."""
        return torch.div(codes[:, None], self.radix, rounding_mode="floor") % self.levels.long()

    def _grid_point(self, digits: Tensor) -> Tensor:
        """[N, d] digits -> [N, d] levels in [-1, 1] (float32 or the levels' dtype)."""
        half = (self.levels - 1) / 2
        return (digits.to(self.levels.dtype) - half) / half

    def _unproject(self, level: Tensor, batch_size: int) -> Tensor:
        """[B * F, d] grid points -> [B, D, F] latents."""
        return self.project_out(level).reshape(batch_size, -1, self.dim).transpose(1, 2)
