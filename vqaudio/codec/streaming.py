"""Streaming: audio in chunks -> the codes each chunk completes; codes in chunks -> the audio they complete.

For a causal model (``model.causal``) every layer reads no later input than its own frame, so a frame's codes are
final as soon as its samples have arrived, and a frame's audio as soon as its codes have. ``StreamingEncoder`` and
``StreamingDecoder`` keep, per layer, only the inputs later outputs still read (the idea of the streaming modules of
Moshi/Mimi, Défossez et al., 2024, https://arxiv.org/abs/2410.00037), and emit what is ready::

    audio chunks ──► log-mel framing ──► causal convs ──► RVQ (frame-local) ──► codes [P + K, n]
                     (last n_fft - hop     (last K - s inputs
                      samples)              per layer)
    pitch row:  ──► pitch framing (its window is centred: it reads ``encoder_lookahead`` samples past the frame)

    codes chunks ──► RVQ decode ──► causal convs / transposed convs ──► iSTFT head ──► audio [n * hop]
                                    (last inputs per layer)            running phase; the last spectra, whose
                                                                       windows overlap the next samples
    pitch row: the head's F0 is interpolated towards the next frame, so the second half of a frame's audio waits
    for the next frame's codes (``decoder_lookahead``). A ``to_frame`` iSTFT head's windows end with their frames,
    so the last n_fft - hop samples wait for the next frames' windows (also ``decoder_lookahead``); its F0 is
    taken at its windows' centres, which need no later codes.

Exactness: the streamed codes, concatenated, equal ``VQVAE.encode`` of the whole input, and the streamed audio
equals ``VQVAE.decode`` of all the codes within float rounding, whatever the chunk sizes: each output is the same
sum of the same products, taken in another order (a chunk's few frames go through matrix products, a whole input
through torch's convolutions): about 1e-7 (tests/test_stream.py; docs/GUARANTEES.md, "Streaming"). A latent within
rounding of two codes could therefore pick the other code; this was not seen on any test or example clip.

Latency (``StreamLatency``): a frame's codes are ready ``encoder_lookahead`` samples after its last sample, and
the last ``decoder_lookahead`` samples of its audio wait for the next frame's codes; so the algorithmic latency
from a sample in to the same sample out is at most ``hop_length + encoder_lookahead + decoder_lookahead``
samples, plus the chunk length when audio arrives in chunks (docs/GUARANTEES.md, "Streaming").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from vqaudio.codec.conv import Conv1d, ConvTranspose1d, LayerState, streaming_layers, take_windows
from vqaudio.codec.istft import ISTFTHead, PhaseState
from vqaudio.codec.pitch import (
    decode_pitch,
    frames_read_back,
    pitch_at_frames,
    pitch_codes_of_frames,
    pitch_padding,
    pitch_window,
    subframe_offsets,
)
from vqaudio.codec.vqvae import VQVAE, folded_copy
from vqaudio.errors import AudioError, InputError


class StreamLatency(NamedTuple):
    """Algorithmic latency of a causal model, in samples.

    frame: ``hop_length``, the samples a frame's codes summarise (the last one waits for all of them).
    encoder_lookahead: samples after a frame's last one that its codes read (the pitch row's centred window).
    decoder_lookahead: samples of a frame's audio that wait for later frames' codes (the pitch row's F0
        interpolation; a ``to_frame`` iSTFT head's overlapping windows), counted from the first such sample to the
        end of the frame.
    sample_rate: Hz.
    """

    frame: int
    encoder_lookahead: int
    decoder_lookahead: int
    sample_rate: int

    @property
    def samples(self) -> int:
        """The most a sample waits from entering the encoder to leaving the decoder (chunks of one frame, no
        compute time)."""
        return self.frame + self.encoder_lookahead + self.decoder_lookahead

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate


def stream_latency(model: VQVAE) -> StreamLatency:
    """The algorithmic latency of streaming ``model`` (causal or not: for a non-causal model it is what the
    pitch row alone would add)."""
    encoder_lookahead = decoder_lookahead = 0
    head = model.decoder.head
    if model.pitch_rows:
        pitch = model.config.pitch
        window = pitch_window(model.sample_rate, pitch.min_f0)
        padding = pitch_padding(model.hop_length, model.sample_rate, pitch.min_f0)
        encoder_lookahead = max(0, window - padding - model.hop_length)
        assert isinstance(head, ISTFTHead)
        ready = _subframes_ready(model.head_frames_per_frame, model.pitch_shift)
        decoder_lookahead = model.hop_length - ready * head.hop_length
    if isinstance(head, ISTFTHead):  # samples that wait for later iSTFT frames' windows
        decoder_lookahead += head.lookahead
    return StreamLatency(model.hop_length, encoder_lookahead, decoder_lookahead, model.sample_rate)


def _subframes_ready(factor: int, shift: float) -> int:
    """iSTFT frames of a token frame whose F0 does not read the next token frame (``pitch_at_frames``: sub-frame
    ``j`` reads the frames up to ``ceil`` of its offset); they come first."""
    return sum(1 for offset in subframe_offsets(factor, shift) if math.ceil(offset) <= 0)


def check_streamable(model: VQVAE, name: str = "this model") -> None:
    """Raise InputError unless ``model`` is causal (only then is a frame final before later audio arrives)."""
    if not model.config.causal:
        raise InputError(
            f"{name} is not causal (model.causal is false): its frames read up to "
            f"{model.receptive_field / model.sample_rate * 1000:.0f} ms of later audio, so it cannot stream; "
            "use encode/decode (or encode_file/decode_stream for long files), or train a causal model "
            "(recipes/rvq_mel_causal.yaml)"
        )


def _layer_states(modules: dict[str, torch.nn.Module]) -> dict[str, LayerState]:
    return {
        name: LayerState()
        for name, module in modules.items()
        if isinstance(module, (Conv1d, ConvTranspose1d))
    }


# --------------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------------
@dataclass
class EncoderState:
    """Everything a ``StreamingEncoder`` carries from one chunk to the next.

    layers: the encoder's convolutions' states, by module name in the model (``model.named_modules()``).
    mel: the log-mel framing's samples (mel front end; else None).
    pitch: the pitch tracker's framing (models with a pitch row; else None).
    codes: [B, K, n] codebook codes made before their pitch codes (the pitch window reads further ahead).
    previous_code: [B] the first codebook's code of the last frame quantized, which held codes (``hold`` > 0)
        compare the next frame with; None before the first frame (and always without hold).
    samples: samples received.
    frames: frames emitted.
    finished: ``flush`` was called; ``reset`` starts a new stream.
    """

    layers: dict[str, LayerState]
    mel: LayerState | None
    pitch: LayerState | None
    codes: Tensor | None = None
    previous_code: Tensor | None = None
    samples: int = 0
    frames: int = 0
    finished: bool = False


class StreamingEncoder:
    """Audio in chunks -> the codes of the frames each chunk completes (a causal model; ``Tokenizer.stream``).

    ``push`` takes the next samples ([T] or a batch of streams [B, T], float, at ``model.sample_rate``) and returns
    the codes completed ([P + n_q, n] or [B, P + n_q, n] int64, n >= 0); ``flush`` ends the input (zero-padded to
    whole frames, as ``encode`` pads it) and returns the rest. Concatenated, they equal ``model.encode`` of the
    whole input.

    Args:
        model: a causal VQVAE; the stream runs on a copy of its weights taken here (weight norm folded).
        n_q: codebooks to emit (None: all); the pitch row is always emitted.
        hold: the first codebook's hold margin (``VQVAE.quantize_latent``); the state carries the last frame's
            first code, so held codes too equal ``model.encode(wav, n_q, hold)`` of the whole input.
    """

    def __init__(self, model: VQVAE, n_q: int | None = None, hold: float = 0.0) -> None:
        check_streamable(model)
        if n_q is not None and not 1 <= n_q <= model.num_codebooks:
            raise InputError(f"n_q must be between 1 and num_codebooks={model.num_codebooks}, got {n_q}")
        model.check_hold(hold)
        self.model = folded_copy(model)  # weight norm computed once, not at every push
        self.n_q = n_q
        self.hold = hold
        self.latency = stream_latency(model)
        self._modules = dict(self.model.encoder.named_modules(prefix="encoder"))
        self.reset()

    @property
    def state(self) -> EncoderState:
        """The live state (a typed dataclass); ``reset()`` replaces it with a fresh one."""
        return self._state

    def reset(self) -> None:
        """Forget everything: the next ``push`` starts a new stream (at sample 0)."""
        model = self.model
        self._state = EncoderState(
            layers=_layer_states(self._modules),
            mel=LayerState() if model.front_end is not None else None,
            pitch=LayerState() if model.pitch_rows else None,
        )
        self._batched: bool | None = None  # whether chunks are [B, T] (set by the first push)
        self._batch_size = 1

    @torch.inference_mode()
    def push(self, audio: Tensor | np.ndarray) -> Tensor:
        """The next samples [T] or [B, T] -> the codes of the frames they complete, [P + n_q, n] or [B, P + n_q, n]."""
        state = self._state
        if state.finished:
            raise InputError("push() after flush(): call reset() to start a new stream")
        wav = self._check_audio(audio)
        state.samples += wav.shape[-1]
        return self._emit(self._codebook_codes(wav), self._pitch_codes(wav))

    @torch.inference_mode()
    def flush(self) -> Tensor:
        """End the input: the codes of the last frames (the input zero-padded to whole frames, as ``encode`` pads
        it); then only ``reset`` is allowed."""
        state = self._state
        if state.finished:
            raise InputError("flush() was already called: call reset() to start a new stream")
        state.finished = True
        hop = self.model.hop_length
        batch = self._batch_size
        if state.samples == 0:  # nothing was pushed: no frame
            return self._shape(torch.zeros(batch, self._rows, 0, dtype=torch.long, device=self._device))
        num_frames = -(-state.samples // hop)
        zeros = torch.zeros(batch, num_frames * hop - state.samples, device=self._device)
        codes = self._codebook_codes(zeros)
        pitch = None
        if self.model.pitch_rows:  # its frames read past the end: zeros there, as frame_signal pads
            zeros = F.pad(zeros, (0, self.latency.encoder_lookahead))
            pitch = self._pitch_codes(zeros)
        out = self._emit(codes, pitch)
        if state.frames != num_frames or (state.codes is not None and state.codes.shape[-1]):
            raise RuntimeError(f"streaming encoder made {state.frames} frames for {num_frames} expected")
        return out

    # ----------------------------------------------------------------------------------------------
    @property
    def _rows(self) -> int:
        return self.model.pitch_rows + (self.model.num_codebooks if self.n_q is None else self.n_q)

    @property
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _shape(self, codes: Tensor) -> Tensor:
        return codes if self._batched else codes[0]

    def _check_audio(self, audio: Tensor | np.ndarray) -> Tensor:
        """[T] or [B, T] float -> float32 [B, T] on the model's device; the same form on every push."""
        if isinstance(audio, np.ndarray):
            if not np.issubdtype(audio.dtype, np.floating):
                raise TypeError(
                    f"push() expects float audio in [-1, 1], got {audio.dtype}; for int16 pass x / 32768"
                )
            audio = torch.from_numpy(np.ascontiguousarray(audio))
        elif not isinstance(audio, Tensor):
            raise TypeError(f"push() expects a numpy array or torch.Tensor, got {type(audio).__name__}")
        elif not audio.is_floating_point():
            raise TypeError(
                f"push() expects float audio in [-1, 1], got {audio.dtype}; for int16 pass x / 32768"
            )
        if audio.dim() not in (1, 2):
            raise ValueError(
                f"push() expects mono audio [T] or a batch of streams [B, T], got shape {tuple(audio.shape)}"
            )
        batched = audio.dim() == 2
        wav = audio if batched else audio[None]
        if not bool(torch.isfinite(wav).all()):
            raise AudioError("push(): the audio holds NaN or Inf samples")
        if self._batched is not None and (batched != self._batched or wav.shape[0] != self._batch_size):
            expected = f"[{self._batch_size}, T]" if self._batched else "[T]"
            raise ValueError(
                f"push() got shape {tuple(audio.shape)}, but this stream takes {expected} chunks"
            )
        self._batched, self._batch_size = batched, wav.shape[0]
        return wav.to(device=self._device, dtype=torch.float32)

    def _codebook_codes(self, wav: Tensor) -> Tensor:
        """Samples [B, n] -> codebook codes [B, n_q, m] of the latent frames they complete."""
        model, state = self.model, self._state
        states = {self._modules[name]: layer for name, layer in state.layers.items()}
        with streaming_layers(states):
            if model.front_end is not None:
                assert state.mel is not None
                mel = model.front_end
                span = take_windows(state.mel, wav, mel.n_fft, mel.hop_length, mel.padding_left)
                if span is None:
                    features = wav.new_zeros(wav.shape[0], mel.n_mels, 0)
                else:
                    features = mel.log_mel_of_frames(span)
            else:
                features = wav[:, None, :]
            latent = model.encoder(features.to(model.weights_dtype))  # [B, D, m]
        rows = self._rows - model.pitch_rows
        if latent.shape[-1] == 0:
            return torch.zeros(wav.shape[0], rows, 0, dtype=torch.long, device=wav.device)
        if not self.hold:
            return model.quantizer.encode(latent, self.n_q)
        codes = model.quantize_latent(latent, self.n_q, self.hold, state.previous_code)
        state.previous_code = codes[:, 0, -1]
        return codes

    def _pitch_codes(self, wav: Tensor) -> Tensor | None:
        """Samples [B, n] -> pitch codes [B, m] of the pitch windows they complete (None without a pitch row)."""
        model, state = self.model, self._state
        if not model.pitch_rows:
            return None
        assert state.pitch is not None
        pitch = model.config.pitch
        window = pitch_window(model.sample_rate, pitch.min_f0)
        padding = pitch_padding(model.hop_length, model.sample_rate, pitch.min_f0)
        span = take_windows(state.pitch, wav, window, model.hop_length, padding)
        if span is None:
            return torch.zeros(wav.shape[0], 0, dtype=torch.long, device=wav.device)
        frames = span.unfold(-1, window, model.hop_length)  # [B, m, window]
        return pitch_codes_of_frames(frames, model.sample_rate, pitch)

    def _emit(self, codes: Tensor, pitch: Tensor | None) -> Tensor:
        """Join the codebook codes to their pitch codes; emit the frames that have both."""
        state = self._state
        if state.codes is not None:
            codes = torch.cat([state.codes, codes], dim=-1)
        if pitch is not None:
            # pitch codes are never ahead of the codebook codes: their window ends later
            ready = pitch.shape[-1]
            if ready > codes.shape[-1]:
                raise RuntimeError("the pitch row got ahead of the codebooks")
            codes, state.codes = torch.cat([pitch[:, None], codes[..., :ready]], dim=1), codes[..., ready:]
        state.frames += codes.shape[-1]
        return self._shape(codes)


# --------------------------------------------------------------------------------------------------
# Decoder
# --------------------------------------------------------------------------------------------------
@dataclass
class DecoderState:
    """Everything a ``StreamingDecoder`` carries from one chunk to the next.

    layers: the decoder's convolutions' states, by module name in the model.
    pitch_codes: [B, m] pitch codes from token frame ``pitch_start`` on: the frames whose F0 the next iSTFT frames
        interpolate (pitch row; else None).
    pitch_start: the token frame of ``pitch_codes[:, 0]``.
    features: [B, C, m] the head's input for iSTFT frames that wait for the next token frame's F0 (pitch row).
    predicted: iSTFT frames predicted so far (pitch row).
    phase: the iSTFT head's running phase (integrated phase, harmonic excitation; else None).
    spectra: [B, 2 * bins, <= n_fft / hop - 1] the last spectra, whose windows overlap the next samples.
    frames: token frames received; samples: samples emitted.
    rows: rows of the codes of every chunk (fixed by the first).
    finished: ``flush`` was called.
    """

    layers: dict[str, LayerState]
    pitch_codes: Tensor | None = None
    pitch_start: int = 0
    features: Tensor | None = None
    predicted: int = 0
    phase: PhaseState | None = None
    spectra: Tensor | None = None
    frames: int = 0
    samples: int = 0
    rows: int | None = None
    finished: bool = False


class StreamingDecoder:
    """Codes in chunks -> the audio they complete (a causal model; ``Tokenizer.stream(kind="decode")``).

    ``push`` takes the next frames' codes ([P + K', n] or a batch of streams [B, P + K', n], the same rows every
    time) and returns the samples completed ([T] or [B, T] float32, possibly 0);
    ``flush`` ends the codes and returns the rest. Concatenated, they equal ``model.decode`` of all the codes
    (``F * hop_length`` samples).

    Args:
        model: a causal VQVAE; the stream runs on a copy of its weights taken here (weight norm folded).
        n_q: decode only the first n_q codebooks of each chunk (and the pitch row); None: all its rows.
    """

    def __init__(self, model: VQVAE, n_q: int | None = None) -> None:
        check_streamable(model)
        if n_q is not None and not 1 <= n_q <= model.num_codebooks:
            raise InputError(f"n_q must be between 1 and num_codebooks={model.num_codebooks}, got {n_q}")
        self.model = folded_copy(model)  # weight norm computed once, not at every push
        self.latency = stream_latency(model)
        self._modules = dict(self.model.decoder.named_modules(prefix="decoder"))
        head = self.model.decoder.head
        self._head = head if isinstance(head, ISTFTHead) else None
        self._factor = model.head_frames_per_frame
        self.n_q = n_q
        self.reset()

    @property
    def state(self) -> DecoderState:
        """The live state (a typed dataclass); ``reset()`` replaces it with a fresh one."""
        return self._state

    def reset(self) -> None:
        """Forget everything: the next ``push`` starts a new stream (at frame 0)."""
        self._state = DecoderState(layers=_layer_states(self._modules))
        self._batched: bool | None = None  # whether chunks are [B, K, n] (set by the first push)
        self._batch_size = 1

    @torch.inference_mode()
    def push(self, codes: Tensor | np.ndarray) -> Tensor:
        """The next frames' codes [P + K', n] or [B, P + K', n] -> the audio they complete, [T] or [B, T]."""
        state = self._state
        if state.finished:
            raise InputError("push() after flush(): call reset() to start a new stream")
        tensor = self._check_codes(codes)
        state.frames += tensor.shape[-1]
        return self._shape(self._decode(tensor))

    @torch.inference_mode()
    def flush(self) -> Tensor:
        """End the codes: the audio still held (a pitch row's last half frame); then only ``reset`` is allowed."""
        state = self._state
        if state.finished:
            raise InputError("flush() was already called: call reset() to start a new stream")
        state.finished = True
        batch = self._batch_size
        empty = torch.zeros(batch, self.model.pitch_rows + 1, 0, dtype=torch.long, device=self._device)
        held = self.model.pitch_rows or (self._head is not None and self._head.lookahead)
        audio = self._decode(empty) if held and state.frames else empty.new_zeros(batch, 0).float()
        if state.samples != state.frames * self.model.hop_length:
            raise RuntimeError(f"streaming decoder made {state.samples} samples for {state.frames} frames")
        return self._shape(audio)

    # ----------------------------------------------------------------------------------------------
    @property
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _shape(self, audio: Tensor) -> Tensor:
        return audio if self._batched else audio[0]

    def _check_codes(self, codes: Tensor | np.ndarray) -> Tensor:
        """[R, n] or [B, R, n] integer codes -> int64 [B, R, n] on the model's device, the same form every push."""
        if isinstance(codes, np.ndarray):
            if not np.issubdtype(codes.dtype, np.integer):
                raise TypeError(f"push() expects integer codes, got {codes.dtype}")
            codes = torch.from_numpy(np.ascontiguousarray(codes).astype(np.int64, copy=False))
        elif not isinstance(codes, Tensor):
            raise TypeError(
                f"push() expects codes as a numpy array or torch.Tensor, got {type(codes).__name__}"
            )
        elif codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
            raise TypeError(f"push() expects integer codes, got {codes.dtype}")
        if codes.dim() not in (2, 3):
            raise ValueError(
                f"push() expects codes [K, n] or a batch of streams [B, K, n], got shape {tuple(codes.shape)}"
            )
        batched = codes.dim() == 3
        tensor = (codes if batched else codes[None]).long()
        if self.n_q is not None:
            rows = self.model.pitch_rows + self.n_q
            if tensor.shape[1] < rows:
                raise InputError(
                    f"push() n_q={self.n_q} but the codes hold only {tensor.shape[1] - self.model.pitch_rows} codebooks"
                )
            tensor = tensor[:, :rows]
        state = self._state
        if self._batched is not None and (batched != self._batched or tensor.shape[0] != self._batch_size):
            expected = f"[{self._batch_size}, K, n]" if self._batched else "[K, n]"
            raise ValueError(
                f"push() got shape {tuple(codes.shape)}, but this stream takes {expected} chunks"
            )
        if state.rows is not None and tensor.shape[1] != state.rows:
            raise ValueError(
                f"push() got codes with {tensor.shape[1]} rows, but this stream's first chunk had {state.rows}"
            )
        if tensor.shape[-1]:
            tensor = self.model.validate_codes(tensor, "push()")
        elif not self.model.pitch_rows < tensor.shape[1] <= self.model.pitch_rows + self.model.num_codebooks:
            raise ValueError(f"push() got codes with {tensor.shape[1]} rows, which this model does not make")
        self._batched, self._batch_size, state.rows = batched, tensor.shape[0], tensor.shape[1]
        return tensor.to(self._device)

    def _decode(self, codes: Tensor) -> Tensor:
        """The next frames' codes [B, R, n] -> the samples they complete [B, T] float32."""
        model, state = self.model, self._state
        pitch_rows = model.pitch_rows
        states = {self._modules[name]: layer for name, layer in state.layers.items()}
        if codes.shape[-1]:
            latent = model.quantizer.decode(codes[:, pitch_rows:]).to(model.weights_dtype)  # [B, D, n]
            if pitch_rows:
                latent = model.add_pitch(latent, codes[:, 0])[0]
        else:
            latent = torch.zeros(codes.shape[0], model.config.latent_dim, 0, device=codes.device)
            latent = latent.to(model.weights_dtype)
        with streaming_layers(states):
            if self._head is None:
                audio = model.decoder(latent).float()  # [B, n * hop]
                state.samples += audio.shape[-1]
                return audio
            features = model.decoder.features(latent)  # [B, C, n * factor]
        head = self._head
        if pitch_rows:
            prediction = self._predict_with_pitch(features, codes[:, 0])
        else:
            prediction = head.predict(features) if features.shape[-1] else None
        spectra = state.spectra
        if prediction is not None:  # iSTFT frames complete
            new_spectra, state.phase = head.resolve_phase_from(prediction, state.phase)
            spectra = new_spectra if spectra is None else torch.cat([spectra, new_spectra], dim=-1)
        if spectra is None or state.phase is None:
            return features.new_zeros(features.shape[0], 0).float()
        # overlap-add of the frames resolved so far whose windows reach the samples not yet emitted
        resolved = state.phase.frames
        if state.finished:
            stop = state.frames * model.hop_length
        else:  # a sample is final once every frame whose window reaches it has arrived
            stop = max(state.samples, resolved * head.hop_length - head.lookahead)
        audio = head.overlap_add_span(spectra, resolved - spectra.shape[-1], state.samples, stop)
        state.spectra = spectra[..., spectra.shape[-1] - min(head.context_frames - 1, spectra.shape[-1]) :]
        state.samples = stop
        return audio

    def _predict_with_pitch(self, features: Tensor, pitch_codes: Tensor) -> Tensor | None:
        """The head's prediction for the iSTFT frames whose F0 is known: every frame's before the last token frame,
        the first half of the last one's (its second half interpolates towards the next token frame), all at the
        end (``flush``)."""
        model, state, head = self.model, self._state, self._head
        assert head is not None
        factor = self._factor
        if state.features is not None:
            features = torch.cat([state.features, features], dim=-1)
        if state.pitch_codes is not None:
            pitch_codes = torch.cat([state.pitch_codes, pitch_codes], dim=-1)
        if state.finished:
            ready = state.frames * factor
        else:
            ready = max(0, (state.frames - 1) * factor + _subframes_ready(factor, model.pitch_shift))
        count = ready - state.predicted
        state.features, state.pitch_codes = features, pitch_codes
        if count == 0:
            return None
        log_f0, voiced = decode_pitch(pitch_codes, model.config.pitch)
        log_f0, voiced = pitch_at_frames(log_f0, voiced, factor, model.pitch_shift)  # [B, m * factor]
        first = state.predicted - state.pitch_start * factor
        prediction = head.predict(
            features[..., :count], (log_f0[:, first : first + count], voiced[:, first : first + count])
        )
        state.features = features[..., count:]
        state.predicted = ready
        # keep the token frames before the next one to predict that the next frames' F0 reads
        start = max(0, ready // factor - frames_read_back(factor, model.pitch_shift))
        state.pitch_codes = pitch_codes[:, start - state.pitch_start :]
        state.pitch_start = start
        return prediction
