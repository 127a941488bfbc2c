"""The VQ-VAE tokenizer network: front-end -> encoder -> quantizer -> decoder.

VQ-VAE (van den Oord et al., 2017, https://arxiv.org/abs/1711.00937) with a SoundStream / EnCodec
convolutional encoder-decoder and residual or grouped vector quantization (Zeghidour et al., 2021;
Défossez et al., 2022). Two front-ends and two heads, chosen in ``ModelConfig``:

    wav -> SEANetEncoder (strides 2-4-5-8) -> z -> VQ -> SEANetDecoder (8-5-4-2) -> wav
    wav -> LogMel (hop 160) -> SEANetEncoder (stride 2) -> z -> VQ -> SEANetDecoder (2) -> ISTFTHead (hop 160)

With a pitch row (``model.pitch.levels > 0``) the codes carry one more row first: each frame's F0 and
voicing, estimated from the input (``vqaudio.codec.pitch``) rather than learnt. The decoder reads it twice: a
1x1 conv adds it to the quantized latent, and the iSTFT head's harmonic excitation follows it::

    wav -> encode_pitch -------------------------------> pitch row ---+--> latent += conv(pitch)
    wav -> LogMel -> encoder -> z -> VQ -> codebook rows --------------+--> decoder -> head(comb at F0)

Lengths: ``F = ceil(T / hop_length)`` (at least 1). The input is zero-padded on the right to
``F * hop_length`` samples, every layer maps lengths exactly (see ``vqaudio.codec.conv``), and the output
is cropped back to ``T``, so any length works, one sample included.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from vqaudio.codec.conv import ConvGeometry, input_interval
from vqaudio.codec.istft import ISTFTHead
from vqaudio.codec.pitch import decode_pitch, encode_pitch, frames_read_back, pitch_at_frames, pitch_window
from vqaudio.codec.quantization import Codebook, ResidualVQ, build_quantizer
from vqaudio.codec.quantization.base import QuantizerOutput, check_codes
from vqaudio.codec.seanet import SEANetDecoder, SEANetEncoder
from vqaudio.config import FIRST_CODEBOOK_HOLD, ModelConfig, check_value
from vqaudio.errors import InputError
from vqaudio.features import LogMel


class ModelOutput(NamedTuple):
    """What ``VQVAE.forward`` returns.

    audio: [B, T] reconstruction, same T as the input.
    codes: [B, P + K, F] codes used for it (P = 1 pitch row first, or 0).
    latent: [B, D, F] encoder output before quantization.
    quantizer: the quantizer's full output (quantized latents and its losses).
    log_f0: [B, F * hop_length / istft_hop_length] the decoder's F0 estimate (natural log of Hz) per iSTFT
        frame, for the harmonic excitation's pitch loss; None for other decoders.
    """

    audio: Tensor
    codes: Tensor
    latent: Tensor
    quantizer: QuantizerOutput
    log_f0: Tensor | None = None


class VQVAE(nn.Module):
    """Audio [B, T] <-> codes [B, K, F].

    Args:
        config: the architecture; ``config.validate()`` is checked here.

    Attributes:
        config, sample_rate, hop_length (samples per frame), frame_rate (frames per second),
        num_codebooks, codebook_size, pitch_rows (1 with a pitch row before the codebooks, else 0).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.sample_rate = config.sample_rate
        self.hop_length = config.hop_length
        self.frame_rate = config.frame_rate
        self.num_codebooks = config.quantizer.num_codebooks
        self.codebook_size = config.quantizer.codebook_size
        self.pitch_rows = config.pitch_rows
        encoder = config.encoder
        self.front_end: LogMel | None = None
        in_channels = 1
        if encoder.input == "mel":
            self.front_end = LogMel(
                config.sample_rate,
                encoder.mel_n_fft,
                encoder.mel_hop_length,
                encoder.n_mels,
                causal=config.causal,
            )
            in_channels = encoder.n_mels
        self.encoder = SEANetEncoder(in_channels, encoder, config.latent_dim, config.causal)
        self.quantizer = build_quantizer(config.latent_dim, config.quantizer)
        self.decoder = SEANetDecoder(
            config.latent_dim,
            config.decoder,
            config.causal,
            config.sample_rate,
            f0_input=bool(self.pitch_rows),
        )
        # the pitch row's (normalised log F0, voicing) added to the quantized latent; zero at the start, so a
        # model fine-tuned from one without a pitch row (--init-from) starts where that model was
        self.pitch_embedding: nn.Conv1d | None = None
        if self.pitch_rows:
            self.pitch_embedding = nn.Conv1d(2, config.latent_dim, kernel_size=1)
            for parameter in self.pitch_embedding.parameters():
                nn.init.zeros_(parameter)

    # ----------------------------------------------------------------------------------------------
    # Lengths and receptive fields
    # ----------------------------------------------------------------------------------------------
    def num_frames(self, num_samples: int) -> int:
        """Token frames for ``num_samples`` samples: ``ceil(num_samples / hop_length)``, at least 1."""
        return max(1, -(-num_samples // self.hop_length))

    def _encoder_geometry(self) -> list[ConvGeometry]:
        """Samples -> latent frames, every layer in forward order (the STFT is a conv with kernel n_fft)."""
        layers = list(self.encoder.geometry)
        if self.front_end is not None:
            stft = ConvGeometry(self.front_end.n_fft, self.front_end.hop_length, self.front_end.padding_left)
            layers.insert(0, stft)
        return layers

    @property
    def encoder_receptive_field(self) -> int:
        """Samples either side of a frame's own ``hop_length`` samples that can change its latent/codes."""
        reach = 0
        for frame in range(1000, 1000 + 4):  # exact for any frame away from the edges; a few to be safe
            lo, hi = input_interval(self._encoder_geometry(), frame, frame)
            reach = max(reach, frame * self.hop_length - lo, hi - ((frame + 1) * self.hop_length - 1))
        if self.pitch_rows:  # the pitch estimator's window, centred on the frame's span
            window = pitch_window(self.sample_rate, self.config.pitch.min_f0)
            reach = max(reach, -(-(window - self.hop_length) // 2))
        return reach

    @property
    def decoder_receptive_field(self) -> int:
        """Samples (a whole number of frames) on either side of a frame's span whose codes can change it."""
        reach = 0
        for frame in range(1000, 1000 + 4):
            first, last = frame * self.hop_length, (frame + 1) * self.hop_length - 1
            lo, hi = input_interval(self.decoder.geometry, first, last)
            reach = max(reach, frame - lo, hi - frame)
        if self.pitch_rows:  # the head's F0 is interpolated from the neighbouring (or earlier) frames
            reach = max(reach, frames_read_back(self.head_frames_per_frame, self.pitch_shift))
        return reach * self.hop_length

    @property
    def receptive_field(self) -> int:
        """Context in samples, each side, that makes chunked processing equal to whole-file processing.

        The larger of ``encoder_receptive_field`` and ``decoder_receptive_field``: an upper bound for both,
        computed from the kernels, dilations, strides and paddings (a causal model's right side is smaller).
        """
        return max(self.encoder_receptive_field, self.decoder_receptive_field)

    # ----------------------------------------------------------------------------------------------
    # Validation
    # ----------------------------------------------------------------------------------------------
    def _check_audio(self, wav: Tensor, caller: str) -> Tensor:
        if not isinstance(wav, Tensor):
            raise TypeError(f"{caller}() expects a torch.Tensor [B, T], got {type(wav).__name__}")
        if wav.dim() != 2:
            fix = (
                "add a batch dimension with wav[None]"
                if wav.dim() == 1
                else "pass mono audio, batched as [B, T]"
            )
            raise ValueError(f"{caller}() expects audio [B, T], got shape {tuple(wav.shape)}; {fix}")
        if wav.shape[0] < 1 or wav.shape[1] < 1:
            raise ValueError(
                f"{caller}() expects at least one example of at least one sample, got {tuple(wav.shape)}"
            )
        if not wav.is_floating_point():
            raise TypeError(
                f"{caller}() expects float audio in [-1, 1], got {wav.dtype}; "
                "for int16 PCM use wav.float() / 32768"
            )
        return wav.float()  # the front-end and the pitch tracker run in float32 whatever the weights' dtype

    def _check_n_q(self, n_q: int | None) -> None:
        if n_q is not None and not 1 <= n_q <= self.num_codebooks:
            raise InputError(f"n_q must be between 1 and num_codebooks={self.num_codebooks}, got {n_q}")

    # ----------------------------------------------------------------------------------------------
    # Forward, encode, decode
    # ----------------------------------------------------------------------------------------------
    def _latent(self, wav: Tensor) -> Tensor:
        """[B, T] -> [B, D, F]."""
        num_frames = self.num_frames(wav.shape[-1])
        wav = F.pad(wav, (0, num_frames * self.hop_length - wav.shape[-1]))
        features = wav[:, None, :] if self.front_end is None else self.front_end(wav)  # [B, C_in, frames]
        latent = self.encoder(features.to(self.weights_dtype))
        if latent.shape[-1] != num_frames:  # a config the length arithmetic does not cover
            raise RuntimeError(f"encoder made {latent.shape[-1]} frames for {num_frames} expected")
        return latent

    def forward(self, wav: Tensor, n_q: int | None = None) -> ModelOutput:
        """Reconstruct audio through the quantizer.

        Args:
            wav: [B, T] float audio at ``sample_rate``.
            n_q: codebooks to use (None: the quantizer's choice, e.g. all, or quantizer dropout in training).
        Returns:
            ModelOutput with audio [B, T], codes [B, P + K, F], latent [B, D, F], F = ceil(T / hop_length).
        """
        wav = self._check_audio(wav, "forward")
        self._check_n_q(n_q)
        latent = self._latent(wav)
        quantized = self.quantizer(latent, n_q)
        codes = quantized.codes
        head = self.decoder.head
        if self.pitch_rows:
            assert isinstance(head, ISTFTHead)  # validated by the config
            pitch = self._pitch_codes(wav)
            prediction = self._spectrum(quantized.quantized, pitch)
            audio = head.overlap_add(head.resolve_phase(prediction))[:, : wav.shape[-1]]
            return ModelOutput(audio, torch.cat([pitch[:, None], codes], dim=1), latent, quantized)
        if isinstance(head, ISTFTHead) and head.harmonic:
            prediction = head.predict(self.decoder.features(quantized.quantized))
            audio = head.overlap_add(head.resolve_phase(prediction))[:, : wav.shape[-1]]
            return ModelOutput(audio, codes, latent, quantized, head.log_f0(prediction))
        audio = self.decoder(quantized.quantized)[:, : wav.shape[-1]]
        return ModelOutput(audio, codes, latent, quantized)

    def encode(self, wav: Tensor, n_q: int | None = None, hold: float = 0.0) -> Tensor:
        """Audio -> codes.

        Args:
            wav: [B, T] float audio at ``sample_rate``.
            n_q: codebooks to keep (None: all ``num_codebooks``); the pitch row is always kept.
            hold: the first codebook's hold margin (``quantize_latent``); 0: every code is the nearest.
        Returns:
            [B, P + K, F] int64 codes: the pitch row first when the model has one (P = 1), then K = n_q or
            num_codebooks codebooks; F = ceil(T / hop_length).
        """
        wav = self._check_audio(wav, "encode")
        self._check_n_q(n_q)
        codes = self.quantize_latent(self._latent(wav), n_q, hold)
        if self.pitch_rows:
            codes = torch.cat([self._pitch_codes(wav)[:, None], codes], dim=1)
        return codes

    def encode_latent(self, wav: Tensor) -> Tensor:
        """[B, T] audio -> [B, D, F] the encoder's output, before quantization (``quantize_latent`` takes it).

        ``encode`` is ``quantize_latent(encode_latent(wav))`` with the pitch row (``encode_pitch``) before it;
        split so that a caller that quantizes frames in order (held codes over windows) can run the encoder apart.
        """
        return self._latent(self._check_audio(wav, "encode_latent"))

    def encode_pitch(self, wav: Tensor) -> Tensor:
        """[B, T] audio -> [B, F] the pitch row's codes (models with a pitch row only)."""
        if not self.pitch_rows:
            raise InputError("encode_pitch(): this model has no pitch row (model.pitch.levels is 0)")
        return self._pitch_codes(self._check_audio(wav, "encode_pitch"))

    def quantize_latent(
        self, latent: Tensor, n_q: int | None = None, hold: float = 0.0, previous: Tensor | None = None
    ) -> Tensor:
        """[B, D, F] encoder output -> [B, K, F] codebook codes (no pitch row).

        Args:
            latent: [B, D, F] from ``encode_latent``, frames in time order.
            n_q: codebooks to keep (None: all).
            hold: 0: every stage looks up each frame's own code. Above 0 (a residual VQ): a frame keeps the previous
                frame's first code while the error of all stages with it is within (1 + hold) times the error with
                its own first code, and the later stages quantize what that leaves (``ResidualVQ.held_first_codes``).
            previous: [B] the first codebook's code of the frame before ``latent[..., 0]`` (a stream or the window
                before); None: the first frame takes its nearest code.
        """
        self._check_n_q(n_q)
        self.check_hold(hold)
        if hold == 0:
            return self.quantizer.encode(latent, n_q)
        assert isinstance(self.quantizer, ResidualVQ)  # check_hold
        return self.quantizer.encode(latent, n_q, hold=hold, previous=previous)

    def check_hold(self, hold: float, name: str = "hold") -> None:
        """Raise InputError (ConfigError for a value out of range) unless ``hold`` is a first-codebook hold margin
        this model can use: 0, or a value in ``FIRST_CODEBOOK_HOLD`` with a residual VQ."""
        check_value(name, hold, FIRST_CODEBOOK_HOLD)
        if hold > 0 and not isinstance(self.quantizer, ResidualVQ):
            raise InputError(
                f"{name}={hold} holds the first stage of a residual VQ, whose later stages absorb the difference; "
                f"this model's quantizer is {self.config.quantizer.kind!r}: use 0"
            )

    def decode(self, codes: Tensor, num_samples: int | None = None) -> Tensor:
        """Codes -> audio.

        Args:
            codes: [B, P + K', F] integer codes (the pitch row first when the model has one); K' <=
                num_codebooks (fewer: coarser audio, for residual VQ).
            num_samples: crop the output to this many samples (at most ``F * hop_length``).
        Returns:
            [B, num_samples or F * hop_length] float audio.
        """
        codes = self.validate_codes(codes, "decode()")
        num_frames = codes.shape[2]
        max_samples = num_frames * self.hop_length
        if num_samples is not None and not 1 <= num_samples <= max_samples:
            raise InputError(
                f"num_samples must be between 1 and F * hop_length = {max_samples}, got {num_samples}"
            )
        if self.pitch_rows:
            head = self.decoder.head
            assert isinstance(head, ISTFTHead)  # validated by the config
            prediction = self._spectrum(self._dequantize(codes[:, 1:]), codes[:, 0])
            audio = head.overlap_add(head.resolve_phase(prediction))
        else:
            audio = self.decoder(self._dequantize(codes)).float()
        return audio if num_samples is None else audio[:, :num_samples]

    @property
    def integrates_phase(self) -> bool:
        """True when the decoder's iSTFT head sums phase over frames (integrated phase or the harmonic
        excitation), so no output frame is local."""
        head = self.decoder.head
        return isinstance(head, ISTFTHead) and head.integrates_phase

    def decode_spectrum(self, codes: Tensor) -> Tensor:
        """Codes -> the iSTFT head's prediction, the frame-local part of ``decode`` (istft heads only).

        ``decode(codes)`` equals ``head.overlap_add(head.resolve_phase(decode_spectrum(codes)))`` with
        ``head = decoder.head``; only ``resolve_phase`` needs the whole input at once.

        Args:
            codes: [B, P + K', F] integer codes, as for ``decode``.
        Returns:
            [B, C, F * prod(decoder.strides)] float32, one column per iSTFT frame (istft_hop_length samples):
            ``ISTFTHead.predict``'s log-magnitudes, then phases or phase deviations (and harmonic gains and F0).
        """
        head = self.decoder.head
        if not isinstance(head, ISTFTHead):
            raise ValueError("decode_spectrum() needs a model with decoder.output='istft'")
        codes = self.validate_codes(codes, "decode_spectrum()")
        if self.pitch_rows:
            return self._spectrum(self._dequantize(codes[:, 1:]), codes[:, 0])
        return head.predict(self.decoder.features(self._dequantize(codes)))

    def _dequantize(self, codes: Tensor) -> Tensor:
        """[B, K', F] codebook codes -> [B, D, F] quantized latent in the decoder's dtype."""
        return self.quantizer.decode(codes).to(self.weights_dtype)

    @property
    def weights_dtype(self) -> torch.dtype:
        """The dtype of the network's weights (float32 unless cast); audio, its features and the pitch tracker
        stay float32 (``vqaudio.features.Float32Constants``)."""
        return next(self.encoder.parameters()).dtype

    # ----------------------------------------------------------------------------------------------
    # The pitch row
    # ----------------------------------------------------------------------------------------------
    def _pitch_codes(self, wav: Tensor) -> Tensor:
        """[B, T] -> [B, F] pitch codes of the input padded to whole frames."""
        num_frames = self.num_frames(wav.shape[-1])
        padded = F.pad(wav, (0, num_frames * self.hop_length - wav.shape[-1]))
        return encode_pitch(padded, self.hop_length, self.sample_rate, self.config.pitch)

    def _spectrum(self, quantized: Tensor, pitch_codes: Tensor) -> Tensor:
        """Quantized latent [B, D, F] and pitch codes [B, F] -> the head's prediction [B, C, F * strides]."""
        latent, log_f0, voiced = self.add_pitch(quantized, pitch_codes)
        head = self.decoder.head
        assert isinstance(head, ISTFTHead)
        pitch = pitch_at_frames(log_f0, voiced, self.head_frames_per_frame, self.pitch_shift)
        return head.predict(self.decoder.features(latent), pitch)

    @property
    def head_frames_per_frame(self) -> int:
        """iSTFT frames per token frame (the sub-frames the pitch row is interpolated to); 1 without an iSTFT head."""
        head = self.decoder.head
        return self.hop_length // head.hop_length if isinstance(head, ISTFTHead) else 1

    @property
    def pitch_shift(self) -> float:
        """Token frames by which the iSTFT frames take their F0 off their own centres (``ISTFTHead.pitch_lead``;
        ``pitch_at_frames``)."""
        head = self.decoder.head
        return -head.pitch_lead / self.hop_length if isinstance(head, ISTFTHead) else 0.0

    def add_pitch(self, quantized: Tensor, pitch_codes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Quantized latent [B, D, F] and pitch codes [B, F] -> (the latent the decoder reads [B, D, F], log F0
        [B, F], voiced [B, F]): the pitch row's embedding added, frame by frame."""
        assert self.pitch_embedding is not None
        log_f0, voiced = decode_pitch(pitch_codes, self.config.pitch)
        pitch = self.config.pitch
        centre = 0.5 * (math.log(pitch.min_f0) + math.log(pitch.max_f0))
        span = math.log(pitch.max_f0) - math.log(pitch.min_f0)
        features = torch.stack([(log_f0 - centre) / span * voiced, voiced.to(log_f0.dtype)], dim=1)
        latent = quantized + self.pitch_embedding(features.to(quantized.dtype))  # both in the weights' dtype
        return latent, log_f0, voiced

    def validate_codes(self, codes: Tensor, caller: str) -> Tensor:
        """[B, P + K', F] codes within their rows' ranges (the pitch row below ``pitch.levels``) -> int64."""
        codes = check_codes(
            codes, self.codebook_size, self.pitch_rows + 1, self.pitch_rows + self.num_codebooks, caller
        )
        if self.pitch_rows and int(codes[:, 0].max()) >= self.config.pitch.levels:
            raise InputError(
                f"{caller} got pitch codes up to {int(codes[:, 0].max())} but the pitch row has "
                f"{self.config.pitch.levels} levels; were the codes made by another model?"
            )
        return codes

    # ---------------------------------------------------------------------------------------------- files
    def release_state_dict(self) -> dict[str, Tensor]:
        """The weights a released model needs: ``state_dict()`` less the codebooks' training statistics
        (``Codebook.TRAINING_STATE``: vq's EMA sums and sizes and dead-code counters; other kinds have none)."""
        training_state = {
            f"{name}.{buffer}"
            for name, module in self.named_modules()
            if isinstance(module, Codebook)
            for buffer in module.TRAINING_STATE
        }
        return {name: tensor for name, tensor in self.state_dict().items() if name not in training_state}

    def load_release_state_dict(self, state_dict: dict[str, Tensor]) -> None:
        """Strict load of a ``release_state_dict`` (or a full ``state_dict``).

        Every inference weight must be present and no unknown key may be; when the training statistics are
        absent they restart from the loaded codebooks, so training can continue from a released model.

        Raises:
            RuntimeError: missing or unexpected keys, or shape mismatches (as ``load_state_dict``).
        """
        required = set(self.release_state_dict())
        known = set(self.state_dict())
        missing = sorted(required - set(state_dict))
        unexpected = sorted(set(state_dict) - known)
        if missing or unexpected:
            raise RuntimeError(
                f"state dict mismatch: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
            )
        has_training_state = set(state_dict) == known
        self.load_state_dict(state_dict, strict=has_training_state)
        if not has_training_state:
            for module in self.modules():
                if isinstance(module, Codebook):
                    module.reset_training_state()


def build_model(config: ModelConfig) -> VQVAE:
    """The one place a ``ModelConfig`` becomes a network."""
    return VQVAE(config)


def folded_copy(
    model: VQVAE, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> VQVAE:
    """A copy of ``model`` in eval mode with weight norm folded into plain weights (each computed once, as every
    forward computes it), for inference that calls the layers many times on little input (streaming, export).

    Args:
        dtype, device: of the copy's weights (None: the model's).
    """
    # a new model, not copy.deepcopy: a deep copy shares the classes torch's parametrize injects into each module,
    # and removing a parametrization deletes its property from that class, so from the original too
    copied = build_model(model.config).to(
        device=next(model.parameters()).device if device is None else device,
        dtype=model.weights_dtype if dtype is None else dtype,
    )
    copied.load_state_dict(model.state_dict())
    for module in copied.modules():
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations.keys()):  # type: ignore[union-attr,operator]
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    for parameter in copied.parameters():
        parameter.requires_grad_(False)
    return copied.eval()
