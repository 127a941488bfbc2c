"""SEANet encoder and decoder: residual units and strided (transposed) convolutions.

The layout of SoundStream (Zeghidour et al., 2021, https://arxiv.org/abs/2107.03312) and EnCodec
(Défossez et al., 2022, https://arxiv.org/abs/2210.13438), without the LSTM. Reads top to bottom:
``ResidualUnit`` -> ``EncoderBlock`` / ``DecoderBlock`` -> ``SEANetEncoder`` / ``SEANetDecoder``.

The same stacks serve both designs of ``vqaudio.codec.vqvae``:

* waveform: the encoder reads samples [B, 1, T] and its strides (e.g. 2-4-5-8) reach the frame rate; the
  decoder mirrors it and ends in a conv to one channel.
* frame rate: the encoder reads log-mel frames [B, n_mels, T / mel_hop] and its strides (e.g. 2) go from
  the mel rate to the token rate; the decoder upsamples to the iSTFT frame rate and ends in an ``ISTFTHead``.
  No layer runs at the sample rate, which makes this design several times cheaper.

ELU activations, as SEANet: cheaper than Snake, and the frame-rate design does not need a periodic prior.
"""

from __future__ import annotations

from torch import Tensor, nn

from vqaudio.codec.conv import Conv1d, ConvGeometry, ConvTranspose1d
from vqaudio.codec.istft import ISTFTHead
from vqaudio.config import DecoderConfig, EncoderConfig


class ResidualUnit(nn.Module):
    """``x + conv1x1(ELU(dilated_conv(ELU(x))))`` with a ``channels // 2`` bottleneck: [B, C, T] -> [B, C, T].

    Args:
        channels: input and output channels.
        kernel_size: kernel of the dilated conv.
        dilation: its dilation.
        causal: causal padding.
    """

    def __init__(self, channels: int, kernel_size: int, dilation: int, causal: bool) -> None:
        super().__init__()
        hidden = max(channels // 2, 1)
        self.dilated = Conv1d(channels, hidden, kernel_size, dilation=dilation, causal=causal)
        self.pointwise = Conv1d(hidden, channels, 1, causal=causal)
        self.activation = nn.ELU()

    @property
    def geometry(self) -> list[ConvGeometry]:
        # The branch's input interval contains the skip's, so the branch bounds the unit.
        return [self.dilated.geometry, self.pointwise.geometry]

    def forward(self, x: Tensor) -> Tensor:
        return x + self.pointwise(self.activation(self.dilated(self.activation(x))))


def _residual_units(
    channels: int, num_layers: int, kernel_size: int, dilation_base: int, causal: bool
) -> list[ResidualUnit]:
    return [ResidualUnit(channels, kernel_size, dilation_base**j, causal) for j in range(num_layers)]


class EncoderBlock(nn.Module):
    """Residual units (dilations ``dilation_base ** j``), then a strided conv.

    [B, C_in, T] -> [B, C_out, T / stride].
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        num_residual_layers: int,
        residual_kernel_size: int,
        dilation_base: int,
        causal: bool,
    ) -> None:
        super().__init__()
        units = _residual_units(in_channels, num_residual_layers, residual_kernel_size, dilation_base, causal)
        self.residuals = nn.Sequential(*units)
        self.activation = nn.ELU()
        # Kernel 2 * stride: every input sample is read by two outputs, which avoids aliasing-like seams.
        self.downsample = Conv1d(in_channels, out_channels, 2 * stride, stride=stride, causal=causal)
        # Every layer on the widest path, in forward order (for receptive-field arithmetic).
        self.geometry = [*(g for unit in units for g in unit.geometry), self.downsample.geometry]

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(self.activation(self.residuals(x)))


class DecoderBlock(nn.Module):
    """A transposed conv, then residual units: [B, C_in, F] -> [B, C_out, F * stride]."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        num_residual_layers: int,
        residual_kernel_size: int,
        dilation_base: int,
        causal: bool,
    ) -> None:
        super().__init__()
        self.activation = nn.ELU()
        self.upsample = ConvTranspose1d(in_channels, out_channels, 2 * stride, stride=stride, causal=causal)
        units = _residual_units(
            out_channels, num_residual_layers, residual_kernel_size, dilation_base, causal
        )
        self.residuals = nn.Sequential(*units)
        # Every layer on the widest path, in forward order (for receptive-field arithmetic).
        self.geometry = [self.upsample.geometry, *(g for unit in units for g in unit.geometry)]

    def forward(self, x: Tensor) -> Tensor:
        return self.residuals(self.upsample(self.activation(x)))


class SEANetEncoder(nn.Module):
    """[B, in_channels, T] -> latent [B, latent_dim, T / prod(strides)].

    Args:
        in_channels: 1 for waveform input, ``n_mels`` for log-mel input.
        config: widths, strides, kernels (``EncoderConfig``).
        latent_dim: channels of the output.
        causal: causal padding everywhere.
    """

    def __init__(self, in_channels: int, config: EncoderConfig, latent_dim: int, causal: bool) -> None:
        super().__init__()
        width = min(config.channels, config.max_channels)
        self.input = Conv1d(in_channels, width, config.kernel_size, causal=causal)
        blocks: list[EncoderBlock] = []
        for stride in config.strides:
            next_width = min(2 * width, config.max_channels)
            blocks.append(
                EncoderBlock(
                    width,
                    next_width,
                    stride,
                    config.num_residual_layers,
                    config.residual_kernel_size,
                    config.dilation_base,
                    causal,
                )
            )
            width = next_width
        self.blocks = nn.Sequential(*blocks)
        self.activation = nn.ELU()
        self.output = Conv1d(width, latent_dim, config.kernel_size, causal=causal)
        # Every layer on the widest path, in forward order (for receptive-field arithmetic).
        self.geometry: list[ConvGeometry] = [
            self.input.geometry,
            *(g for block in blocks for g in block.geometry),
            self.output.geometry,
        ]

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.activation(self.blocks(self.input(x))))


class SEANetDecoder(nn.Module):
    """Latent [B, latent_dim, F] -> waveform [B, F * hop] (the mirror of ``SEANetEncoder``, plus the head).

    Widths double from ``config.channels`` towards the latent (capped at ``max_channels``). The head is a conv
    to one channel (``output="waveform"``) or an ``ISTFTHead`` (``output="istft"``), which multiplies the
    length by ``istft_hop_length``.

    Args:
        latent_dim: channels of the input.
        config: widths, strides, kernels, head (``DecoderConfig``).
        causal: causal padding everywhere.
        sample_rate: Hz (the istft head's harmonic excitation needs it).
        f0_input: the istft head's harmonic excitation follows a given F0 (the tokens' pitch row).
    """

    def __init__(
        self,
        latent_dim: int,
        config: DecoderConfig,
        causal: bool,
        sample_rate: int = 16000,
        f0_input: bool = False,
    ) -> None:
        super().__init__()
        num_strides = len(config.strides)
        widths = [min(config.channels * 2**i, config.max_channels) for i in range(num_strides, -1, -1)]
        self.input = Conv1d(latent_dim, widths[0], config.kernel_size, causal=causal)
        blocks = [
            DecoderBlock(
                widths[i],
                widths[i + 1],
                stride,
                config.num_residual_layers,
                config.residual_kernel_size,
                config.dilation_base,
                causal,
            )
            for i, stride in enumerate(config.strides)
        ]
        self.blocks = nn.Sequential(*blocks)
        self.activation = nn.ELU()
        self.head: Conv1d | ISTFTHead
        if config.output == "istft":
            self.head = ISTFTHead(
                widths[-1],
                config.istft_n_fft,
                config.istft_hop_length,
                causal=causal,
                window_placement=config.istft_window,
                phase=config.istft_phase,
                excitation=config.istft_excitation,
                sample_rate=sample_rate,
                f0_input=f0_input,
            )
        else:
            self.head = Conv1d(widths[-1], 1, config.kernel_size, causal=causal)
        # Every layer on the widest path, in forward order (for receptive-field arithmetic).
        self.geometry: list[ConvGeometry] = [
            self.input.geometry,
            *(g for block in blocks for g in block.geometry),
            self.head.geometry,
        ]

    def forward(self, z: Tensor) -> Tensor:
        """[B, latent_dim, F] -> [B, F * hop]."""
        return self.head(self.features(z)).reshape(z.shape[0], -1)  # waveform head: [B, 1, T] -> [B, T]

    def features(self, z: Tensor) -> Tensor:
        """[B, latent_dim, F] -> [B, width, F * prod(strides)]: everything before the head."""
        return self.activation(self.blocks(self.input(z)))
