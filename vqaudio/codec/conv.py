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

Streaming (``vqaudio.codec.streaming``). Inside ``streaming_layers(states)``, a causal layer that has a
``LayerState`` there takes its input in consecutive pieces and returns the outputs each piece completes, so the
offline ``forward`` of every block above it streams unchanged. A strided conv keeps the inputs later outputs still
read (the last ``K - s`` samples, plus a partial stride); a transposed conv keeps its last ``ceil(k / s) - 1``
input frames and recomputes the overlap they write, rather than keeping a partial sum, so each output sample is
the same sum of the same products as offline (computed as a matrix product: rounded in another order)::

    conv        state |<- K - s ->|  + piece |x x x x x x x|   ->  outputs that end inside it; keep the tail
    transposed  state |frame j-1|    + piece |frame j ... |    ->  samples [j * s, (j + n) * s) of the raw output
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import NamedTuple, cast

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


@dataclass
class LayerState:
    """What a streaming layer keeps between pieces of its input.

    buffer: [B, C, L] inputs that later outputs still read (a conv: from the first sample of its next output
        window, causal left zeros included; a transposed conv: its last input frames); None before the first piece.
    skip: input samples still to drop before the first window (a window that starts after position 0).
    """

    buffer: Tensor | None = None
    skip: int = 0


# The states of the layers that stream in the current context (``streaming_layers``); None: offline.
_STREAMING: ContextVar[Mapping[nn.Module, LayerState] | None] = ContextVar("vqaudio_streaming", default=None)


@contextmanager
def streaming_layers(states: Mapping[nn.Module, LayerState]) -> Iterator[None]:
    """Within the block, every ``Conv1d`` / ``ConvTranspose1d`` in ``states`` streams with its state (updated in
    place); other layers run offline. A context variable, so streams in other threads are not affected."""
    token = _STREAMING.set(states)
    try:
        yield
    finally:
        _STREAMING.reset(token)


def _streaming_state(layer: nn.Module) -> LayerState | None:
    states = _STREAMING.get()
    return None if states is None else states.get(layer)


def take_windows(state: LayerState, x: Tensor, window: int, hop: int, padding_left: int) -> Tensor | None:
    """Append ``x`` [..., n] to the positions a strided window reads, and take the windows it completes.

    Window ``m`` reads positions ``[m * hop - padding_left, m * hop - padding_left + window)`` of the input, zeros
    before position 0 (a causal conv, the causal log-mel framing, the pitch tracker's frames).

    Returns:
        [..., (count - 1) * hop + window]: the span of the ``count`` windows completed (to slide over with the
        stride ``hop``), or None when none is; the state then keeps only what later windows read.
    """
    if state.buffer is None:  # the first piece: the left zeros, or samples that no window reads
        buffer = F.pad(x, (max(padding_left, 0), 0))
        state.skip = max(-padding_left, 0)
    else:
        buffer = torch.cat([state.buffer, x], dim=-1)
    if state.skip:
        dropped = min(state.skip, buffer.shape[-1])
        buffer, state.skip = buffer[..., dropped:], state.skip - dropped
    count = (buffer.shape[-1] - window) // hop + 1 if buffer.shape[-1] >= window else 0
    state.buffer = buffer[..., count * hop :]
    return buffer[..., : (count - 1) * hop + window] if count else None


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
        self.causal = causal
        self.out_channels = out_channels
        total = effective_kernel - stride
        self.padding_left = total if causal else total - total // 2
        self.padding_right = total - self.padding_left

    @property
    def geometry(self) -> ConvGeometry:
        return ConvGeometry(self.effective_kernel, self.stride, self.padding_left)

    def forward(self, x: Tensor) -> Tensor:
        """[B, C_in, T] -> [B, C_out, ceil(T / stride)]; streaming (``streaming_layers``): the outputs completed."""
        state = _streaming_state(self)
        if state is not None:
            return self._stream(x, state)
        extra = -x.shape[-1] % self.stride  # right zeros so a partial last stride still makes a frame
        return self.conv(F.pad(x, (self.padding_left, self.padding_right + extra)))

    def _stream(self, x: Tensor, state: LayerState) -> Tensor:
        """The next piece [B, C_in, n] -> the outputs whose windows it completes [B, C_out, m]."""
        if not self.causal:
            raise RuntimeError("a non-causal Conv1d cannot stream: its outputs read later inputs")
        span = take_windows(state, x, self.effective_kernel, self.stride, self.padding_left)
        if span is None:
            return x.new_zeros(x.shape[0], self.out_channels, 0)
        conv = cast(nn.Conv1d, self.conv)
        if conv.groups != 1:
            return conv(span)
        # A matrix product of the windows and the weight: torch's CPU convolution spends ~4x longer on the few
        # outputs of a piece than the product does (the same sums, rounded in another order: ~1e-7).
        windows = span.unfold(-1, self.effective_kernel, self.stride)[
            ..., :: conv.dilation[0]
        ]  # [B, C_in, m, k]
        columns = windows.permute(0, 2, 1, 3).reshape(span.shape[0], windows.shape[2], -1)  # [B, m, C_in * k]
        weight = conv.weight.reshape(conv.weight.shape[0], -1)  # [C_out, C_in * k]
        out = torch.matmul(columns, weight.t())  # [B, m, C_out]
        if conv.bias is not None:
            out = out + conv.bias
        return out.transpose(1, 2)


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
        self.causal = causal
        self.out_channels = out_channels
        total = kernel_size - stride
        self.trim_left = 0 if causal else total - total // 2
        self.context_frames = -(-kernel_size // stride) - 1  # earlier input frames an output sample hears

    @property
    def geometry(self) -> ConvGeometry:
        return ConvGeometry(self.kernel_size, self.stride, self.trim_left, transposed=True)

    def forward(self, x: Tensor) -> Tensor:
        """[B, C_in, F] -> [B, C_out, F * stride]; streaming (``streaming_layers``): the samples of these frames."""
        state = _streaming_state(self)
        if state is not None:
            return self._stream(x, state)
        length = x.shape[-1] * self.stride
        return self.conv(x)[..., self.trim_left : self.trim_left + length]

    def _stream(self, x: Tensor, state: LayerState) -> Tensor:
        """The next frames [B, C_in, n] -> their samples [B, C_out, n * stride]: the raw output of the kept
        frames and these, from the first of these on (causal: a sample hears no later frame)."""
        if not self.causal:
            raise RuntimeError("a non-causal ConvTranspose1d cannot stream: its samples hear later frames")
        if x.shape[-1] == 0:
            return x.new_zeros(x.shape[0], self.out_channels, 0)
        frames = x if state.buffer is None else torch.cat([state.buffer, x], dim=-1)
        kept = frames.shape[-1] - x.shape[-1]
        state.buffer = frames[..., frames.shape[-1] - min(self.context_frames, frames.shape[-1]) :]
        conv = cast(nn.ConvTranspose1d, self.conv)
        if conv.groups != 1 or conv.dilation[0] != 1:
            return conv(frames)[..., kept * self.stride : (kept + x.shape[-1]) * self.stride]
        # As for Conv1d._stream, a matrix product (each frame's kernel-long contribution), then the overlap-add:
        # contribution sample t of frame j lands at j * stride + t, one shifted sum per stride of the kernel.
        batch, num_frames, stride = frames.shape[0], frames.shape[-1], self.stride
        weight = conv.weight.reshape(conv.weight.shape[0], -1)  # [C_in, C_out * k]
        contributions = torch.matmul(frames.transpose(1, 2), weight)  # [B, F, C_out * k]
        parts = -(-self.kernel_size // stride)
        contributions = F.pad(contributions.reshape(batch, num_frames, self.out_channels, self.kernel_size),
                              (0, parts * stride - self.kernel_size))  # fmt: skip
        first, last = kept * stride, (kept + x.shape[-1]) * stride  # the samples of the new frames
        out = None
        for part in range(parts):  # contributions[:, j, :, part * s + i] lands at (j + part) * s + i
            samples = contributions[..., part * stride : (part + 1) * stride].permute(0, 2, 1, 3)
            shifted = F.pad(
                samples.reshape(batch, self.out_channels, num_frames * stride), (part * stride, 0)
            )
            shifted = shifted[..., first:last]
            out = shifted if out is None else out + shifted
        assert out is not None
        return out if conv.bias is None else out + conv.bias[:, None]


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
