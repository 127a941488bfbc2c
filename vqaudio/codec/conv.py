"""1D convolutions whose padding makes lengths exact, causal or centred ("same").

A stride-``s`` convolution maps ``T`` samples to ``ceil(T / s)`` frames and the transposed convolution maps
``F`` frames to exactly ``F * s`` samples.

The layout follows EnCodec's ``modules/conv.py`` (Défossez et al., 2022, https://arxiv.org/abs/2210.13438).
Padding is zeros, so no sample outside the signal (and, when causal, none from the future) leaks in.

Strided convolution, effective kernel ``K = (kernel_size - 1) * dilation + 1``, total padding ``K - s``::

    causal      |<------ K - s ------>|x0 x1 x2 ... x(T-1)|0 .. 0|
    non-causal  |<- (K-s) - (K-s)//2 ->|x0 x1 ... x(T-1)|<- (K-s)//2 ->|0 .. 0|
                             the last zeros only fill up to a multiple of s ^^^^

    output o reads padded samples [o*s, o*s + K)   =>   (T + K - s - K) / s + 1 = T / s outputs

    causal: output o reads inputs up to o*s + s - 1, i.e. never past its own stride window.

Transposed convolution, kernel ``k >= s``: the raw output has ``(F - 1) * s + k`` samples; trim ``k - s``::

    raw         |<-- frame 0 -->|
                        |<-- frame 1 -->|               frame j writes raw samples [j*s, j*s + k)
    causal      keep raw[0 : F*s]              (trim k - s on the right: sample n hears frames <= n // s only)
    non-causal  keep raw[left : left + F*s], left = (k - s) - (k - s) // 2

Weight normalisation (Salimans & Kingma, 2016) is on by default, as in EnCodec and DAC: it conditions the
optimisation of deep conv stacks and its per-call cost (one norm of the weight) is negligible next to the
convolution at every rate this package runs. It uses ``torch.nn.utils.parametrizations.weight_norm``,
whose state-dict keys (``parametrizations.weight.original0`` / ``original1``) are plain tensors that
safetensors stores.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import parametrizations, parametrize

from vqaudio.errors import InputError


class _ShapeOnlyWeightNorm(parametrizations._WeightNorm):
    """torch's weight-norm parametrization for a model built on the meta device (to read its tensor shapes):
    the originals are made as empty meta tensors, because torch's ``right_inverse`` on meta runs a
    decomposition that imports ``torch._dynamo`` (~80 MB and ~1 s, for every ``Tokenizer.load``)."""

    def right_inverse(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        gain_shape = [
            size if axis == self.dim % weight.dim() else 1 for axis, size in enumerate(weight.shape)
        ]
        return torch.empty(gain_shape, dtype=weight.dtype, device=weight.device), weight


def apply_weight_norm(conv: nn.Module, dim: int = 0) -> nn.Module:
    """``torch.nn.utils.parametrizations.weight_norm`` (same state-dict keys and shapes), cheap on meta."""
    if not conv.weight.is_meta:
        return parametrizations.weight_norm(conv, dim=dim)
    parametrize.register_parametrization(conv, "weight", _ShapeOnlyWeightNorm(dim), unsafe=True)
    return conv


class ConvGeometry(NamedTuple):
    """How one layer maps positions, for receptive-field arithmetic.

    transposed=False: output ``o`` reads inputs ``[o*stride - padding, o*stride - padding + kernel)``.
    transposed=True: output ``n`` hears inputs ``j`` with ``j*stride <= n + padding < j*stride + kernel``
    (``padding`` is the left trim).
    """

    kernel: int
    stride: int
    padding: int
    transposed: bool = False


class Conv1d(nn.Module):
    """``nn.Conv1d`` with causal or centred zero padding: [B, C_in, T] -> [B, C_out, ceil(T / stride)].

    Args:
        in_channels, out_channels, kernel_size, stride, dilation, groups, bias: as ``nn.Conv1d``.
        causal: all padding on the left (output ``o`` never reads input after ``o * stride + stride - 1``).
        weight_norm: reparametrise the weight as ``g * v / ||v||``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        causal: bool = False,
        weight_norm: bool = True,
    ) -> None:
        super().__init__()
        effective_kernel = (kernel_size - 1) * dilation + 1
        if effective_kernel < stride:
            raise InputError(
                f"Conv1d: effective kernel {effective_kernel} is shorter than stride {stride}, so samples "
                "would be skipped; use kernel_size >= stride"
            )
        conv = nn.Conv1d(
            in_channels, out_channels, kernel_size, stride=stride, dilation=dilation, groups=groups, bias=bias
        )
        self.conv = apply_weight_norm(conv) if weight_norm else conv
        self.stride = stride
        self.effective_kernel = effective_kernel
        total = effective_kernel - stride
        self.padding_left = total if causal else total - total // 2
        self.padding_right = total - self.padding_left

    @property
    def geometry(self) -> ConvGeometry:
        return ConvGeometry(self.effective_kernel, self.stride, self.padding_left)

    def forward(self, x: Tensor) -> Tensor:
        """[B, C_in, T] -> [B, C_out, ceil(T / stride)]."""
        extra = -x.shape[-1] % self.stride  # right zeros so a partial last stride still makes a frame
        return self.conv(F.pad(x, (self.padding_left, self.padding_right + extra)))


class ConvTranspose1d(nn.Module):
    """``nn.ConvTranspose1d`` trimmed to exactly ``F * stride`` outputs: [B, C_in, F] -> [B, C_out, F*stride].

    Args:
        in_channels, out_channels, kernel_size, stride, bias: as ``nn.ConvTranspose1d``; needs
            ``kernel_size >= stride``.
        causal: trim only on the right (output ``n`` hears frames ``<= n // stride`` only).
        weight_norm: reparametrise the weight as ``g * v / ||v||``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        bias: bool = True,
        causal: bool = False,
        weight_norm: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size < stride:
            raise InputError(
                f"ConvTranspose1d: kernel_size {kernel_size} is shorter than stride {stride}, which leaves "
                "gaps in the output; use kernel_size >= stride (2 * stride is usual)"
            )
        conv = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride=stride, bias=bias)
        # dim=1: the output-channel axis of a transposed conv weight [C_in, C_out, k] (a gain per output).
        self.conv = apply_weight_norm(conv, dim=1) if weight_norm else conv
        self.stride = stride
        self.kernel_size = kernel_size
        total = kernel_size - stride
        self.trim_left = 0 if causal else total - total // 2

    @property
    def geometry(self) -> ConvGeometry:
        return ConvGeometry(self.kernel_size, self.stride, self.trim_left, transposed=True)

    def forward(self, x: Tensor) -> Tensor:
        """[B, C_in, F] -> [B, C_out, F * stride]."""
        length = x.shape[-1] * self.stride
        return self.conv(x)[..., self.trim_left : self.trim_left + length]


def input_interval(layers: list[ConvGeometry], first: int, last: int) -> tuple[int, int]:
    """Input positions ``[lo, hi]`` (inclusive) that can influence outputs ``first..last`` of a layer stack.

    Args:
        layers: the stack in forward order (for a residual unit, list its branch: it contains the skip).
        first, last: output positions (inclusive).
    Returns:
        (lo, hi) input positions before any padding; outside the signal they are padding zeros.
    """
    lo, hi = first, last
    for layer in reversed(layers):
        if layer.transposed:
            # j * s <= n + trim < j * s + k  =>  ceil((n + trim - k + 1) / s) <= j <= floor((n + trim) / s)
            lo = -((-(lo + layer.padding - layer.kernel + 1)) // layer.stride)
            hi = (hi + layer.padding) // layer.stride
        else:
            lo = lo * layer.stride - layer.padding
            hi = hi * layer.stride - layer.padding + layer.kernel - 1
    return lo, hi
