"""iSTFT head: frame features -> log-magnitude and phase -> waveform by inverse FFT and overlap-add.

Vocos (Siuzdak, 2023, https://arxiv.org/abs/2306.00814): predicting a spectrum per frame and letting the
inverse STFT make the samples replaces every waveform-rate upsampling layer, which is where SEANet decoders
spend their time.

Framing ("same", so ``F`` frames give exactly ``F * hop`` samples). Frame ``j`` is windowed and added at raw
positions ``[j * hop, j * hop + n_fft)``; the raw signal has ``(F - 1) * hop + n_fft`` samples and we crop
``n_fft - hop`` of them. Where the crop falls places each frame's window against the hop of output samples the
frame stands for (``window_placement``)::

    raw          |<------ frame 0 ------>|
                       |<------ frame 1 ------>|   ...
    centred      crop (n_fft-hop) - (n_fft-hop)//2 on the left and (n_fft-hop)//2 on the right
    from_frame   crop all n_fft - hop on the right: sample n only hears frames j <= n // hop
    to_frame     crop all n_fft - hop on the left: frame j's window ends where its hop ends

A causal decoder's frame ``j`` has heard the codes up to its own hop. ``from_frame`` (the causal default before
``to_frame`` existed) adds no overlap-add latency, but its window reaches n_fft - hop samples past that hop, so
the frame must predict audio its codes never heard (docs/EXPERIMENTS.md measured the cost). ``to_frame`` asks
each frame only for audio up to its own hop; the price is that sample ``n`` is final only once frame
``(n + n_fft - hop) // hop`` has arrived: n_fft - hop samples of streaming latency (``vqaudio.codec.streaming``).

Phase. ``phase="direct"`` predicts each frame's phase outright, as Vocos does. A steady harmonic then needs the
network to advance the phase by ``2 pi f hop / sr`` from each frame to the next, which a convolutional decoder
reading log-mel features (no phase, no clock) does not learn: its output has no harmonic lines and sounds
breathy. ``phase="integrated"`` predicts a deviation in ``(-pi, pi)`` per bin and frame instead, and the phase
of bin ``k`` at frame ``t`` is the bin's own advance ``2 pi k hop t / n_fft`` plus the running sum of the
deviations, so a zero prediction already is a phase-continuous sinusoid at each bin's centre. The running sum
makes every frame depend on all earlier ones: decoding in windows must integrate over the whole input first
(``predict`` -> ``resolve_phase`` -> ``overlap_add``; the first and last are frame-local). So does the
harmonic excitation's running phase.

Harmonic excitation. ``excitation="harmonic"`` (direct phase only) adds a source-filter branch, as the
neural source-filter vocoders do (Wang et al., 2019, https://arxiv.org/abs/1810.11946) but at frame rate: the
head also predicts each frame's F0 (trained against ``vqaudio.codec.pitch``; ``log_f0``) and a complex gain per bin
(``harmonic_filter``, zero at initialisation so a model fine-tuned from a plain head starts where it was). The
spectrum is the direct branch plus the gains times the STFT of a harmonic comb: every harmonic of F0 below
Nyquist at unit amplitude, the fundamental's phase summed over frames from F0. The comb carries both what the
direct branch lacks: lines at the harmonics, and the phase advance that keeps them steady. F0 reaches the
comb detached (a phase is a poor thing to differentiate); it learns from its own loss.

With a pitch row in the tokens (``f0_input=True``) the head predicts no F0: the decoded F0 and voicing arrive
with the features (``predict(x, pitch)``), and the comb sounds in voiced frames only, so the harmonics follow the
sent pitch. Fine-tuned from a model trained without it (whose direct branch had learnt to make voiced speech from
random-phase frames), no form of the branch learnt to carry energy: additive gains raised the mel distance, and
a harmonic share of one envelope stayed at 0 (docs/EXPERIMENTS.md); it is meant to be trained from the start.

The overlap-add is done by hand with ``F.fold`` (``torch.istft`` insists on a nonzero window envelope
everywhere, which the cropped edges do not have), and divided by the summed squared window. Uncentred, one end
of the output is covered by single window edges (the start for ``from_frame``, the end for ``to_frame``); there
the division is by the steady-state envelope, so the output fades in (or out) over n_fft - hop samples instead
of blowing up.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vqaudio.codec.conv import Conv1d, ConvGeometry
from vqaudio.codec.pitch import MAX_F0_HZ, MIN_F0_HZ
from vqaudio.errors import InputError
from vqaudio.features import Float32Constants, float64_constant, frame_signal

ENVELOPE_FLOOR = 0.01  # relative to the steady-state envelope; bounds the gain at a non-causal input's edges
# An uncentred head divides by no less than the steady-state envelope: the first (from_frame) or last
# (to_frame) 30 ms (n_fft - hop samples) of a signal fade in or out instead of being amplified up to
# 1 / ENVELOPE_FLOOR times, which made every training crop's first samples a source of huge gradients (a causal
# run at rvq_mel's learning rate diverged; docs/EXPERIMENTS.md).
CAUSAL_ENVELOPE_FLOOR = 1.0
PHASE_MODES = ("direct", "integrated")
WINDOW_PLACEMENTS = ("auto", "centred", "from_frame", "to_frame")
EXCITATIONS = ("none", "harmonic")
EXCITATION_BLOCK_FRAMES = 4096  # harmonic combs are synthesised this many frames at a time (bounded memory)


class PhaseState(NamedTuple):
    """Where ``resolve_phase`` left off, so the next frames of the same input continue its running sums.

    frames: frames resolved so far.
    deviation_sum: [B, bins] float64, the integrated phase's running sum at the last frame (or None).
    f0: [B] float64 F0 (Hz) of the last frame, and centre_phase: [B] float64 the comb's running phase there
        (harmonic excitation; or None).
    """

    frames: int
    deviation_sum: Tensor | None
    f0: Tensor | None
    centre_phase: Tensor | None


class ISTFTHead(Float32Constants):
    """[B, channels, F] features -> [B, F * hop_length] waveform.

    Args:
        channels: input feature channels.
        n_fft: FFT size and Hann window length; ``n_fft >= 2 * hop_length`` so windows overlap.
        hop_length: samples per frame.
        causal: the default placement is ``from_frame`` (else ``centred``).
        window_placement: where each frame's window sits against its hop of samples: ``"centred"``,
            ``"from_frame"`` (starting with it: sample ``n`` depends on frames ``<= n // hop_length``),
            ``"to_frame"`` (ending with it: frames ``<= (n + n_fft - hop_length) // hop_length``), or ``"auto"``
            (by ``causal``); see the module docstring.
        phase: ``"direct"`` (each frame's phase) or ``"integrated"`` (a deviation from each bin's own advance,
            summed over frames; see the module docstring).
        excitation: ``"none"`` or ``"harmonic"`` (a predicted F0's harmonic comb times predicted gains is added
            to the spectrum; direct phase only; see the module docstring).
        sample_rate: Hz; the harmonic excitation needs it.
        f0_input: the harmonic excitation takes F0 and voicing from ``predict``'s ``pitch`` argument (the
            tokens' pitch row) instead of predicting F0.
    """

    window: Tensor  # [n_fft] Hann; float32 even when the head's convolutions are cast to bfloat16/float16
    FLOAT32_BUFFERS = ("window",)

    def __init__(
        self,
        channels: int,
        n_fft: int,
        hop_length: int,
        causal: bool = False,
        window_placement: str = "auto",
        phase: str = "direct",
        excitation: str = "none",
        sample_rate: int = 16000,
        f0_input: bool = False,
    ) -> None:
        super().__init__()
        if phase not in PHASE_MODES:
            raise InputError(f"ISTFTHead phase must be one of {PHASE_MODES}, got {phase!r}")
        if window_placement not in WINDOW_PLACEMENTS:
            raise InputError(
                f"ISTFTHead window_placement must be one of {WINDOW_PLACEMENTS}, got {window_placement!r}"
            )
        if excitation not in EXCITATIONS:
            raise InputError(f"ISTFTHead excitation must be one of {EXCITATIONS}, got {excitation!r}")
        if excitation != "none" and phase != "direct":
            raise InputError("ISTFTHead: the harmonic excitation needs phase='direct'")
        if f0_input and excitation != "harmonic":
            raise InputError("ISTFTHead: f0_input needs excitation='harmonic'")
        if hop_length < 1 or n_fft < 2 * hop_length:
            raise InputError(
                f"ISTFTHead needs n_fft >= 2 * hop_length so frames overlap, got n_fft={n_fft}, "
                f"hop_length={hop_length}; raise decoder.istft_n_fft"
            )
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.sample_rate = sample_rate
        self.harmonic = excitation == "harmonic"
        self.f0_input = f0_input
        self.integrated = phase == "integrated"
        # True when resolve_phase sums over frames, so it needs the whole input
        self.integrates_phase = self.integrated or self.harmonic
        self.num_bins = n_fft // 2 + 1
        self.projection = Conv1d(channels, 2 * self.num_bins, kernel_size=1)
        if self.harmonic:
            self.harmonic_filter = Conv1d(channels, 2 * self.num_bins, kernel_size=1, weight_norm=False)
            parameters = list(self.harmonic_filter.parameters())
            if not f0_input:
                self.pitch = Conv1d(channels, 1, kernel_size=1, weight_norm=False)
                parameters += list(self.pitch.parameters())
            for parameter in parameters:
                nn.init.zeros_(parameter)  # no harmonic branch, F0 mid-range, at the start
        if window_placement == "auto":
            window_placement = "from_frame" if causal else "centred"
        self.window_placement = window_placement
        total = n_fft - hop_length
        self.crop_left = {"from_frame": 0, "centred": total - total // 2, "to_frame": total}[window_placement]
        # A full-scale sinusoid peaks at |X| ~ n_fft / 4 under a Hann window: capping |X| at n_fft leaves
        # headroom for any real signal and stops an early-training spike from overflowing exp().
        self.max_log_magnitude = math.log(n_fft)
        window = torch.hann_window(n_fft, device="cpu")  # explicit: the floor below is read on the CPU
        self.register_buffer("window", window, persistent=False)
        # Steady-state envelope: at phase p the overlapping frames add w^2[p] + w^2[p + hop] + ...
        padded = F.pad(window.square(), (0, -n_fft % hop_length))
        floor = ENVELOPE_FLOOR if window_placement == "centred" else CAUSAL_ENVELOPE_FLOOR
        self.envelope_floor = floor * float(padded.reshape(-1, hop_length).sum(0).max())

    @property
    def geometry(self) -> ConvGeometry:
        """Overlap-add behaves like a transposed conv with kernel n_fft and stride hop_length."""
        return ConvGeometry(self.n_fft, self.hop_length, self.crop_left, transposed=True)

    @property
    def context_frames(self) -> int:
        """Frames either side of a frame whose spectra reach its samples in ``overlap_add``."""
        return -(-self.n_fft // self.hop_length)

    def forward(self, x: Tensor) -> Tensor:
        """[B, channels, F] -> [B, F * hop_length]."""
        return self.overlap_add(self.resolve_phase(self.predict(x)))

    def predict(self, x: Tensor, pitch: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """[B, channels, F] -> [B, C, F] float32: log-magnitudes, then phases or phase deviations (``C = 2 *
        bins``); with the harmonic excitation also the real and imaginary harmonic gains and the raw F0
        (``C = 4 * bins + 1``; ``log_f0`` reads it), or with ``f0_input`` the given log F0 and voicing in
        place of the raw F0 (``C = 4 * bins + 2``).

        Args:
            x: [B, channels, F] features.
            pitch: with ``f0_input``: (log F0 [B, F] natural-log Hz, voiced [B, F] bool) per iSTFT frame.

        Frame-local (1x1 convs).
        """
        prediction = self.projection(x)
        if self.harmonic:
            if self.f0_input:
                if pitch is None:
                    raise ValueError("ISTFTHead.predict() needs pitch=(log_f0, voiced) with f0_input")
                log_f0, voiced = pitch
                extra = [log_f0[:, None].to(prediction.dtype), voiced[:, None].to(prediction.dtype)]
            else:
                extra = [self.pitch(x)]
            prediction = torch.cat([prediction, self.harmonic_filter(x), *extra], dim=1)
        return prediction.float()

    def log_f0(self, prediction: Tensor) -> Tensor:
        """``predict``'s output -> [B, F] natural log of the F0 in Hz (harmonic excitation only)."""
        if not self.harmonic:
            raise ValueError("log_f0() needs a head with the harmonic excitation")
        if self.f0_input:
            return prediction[:, -2]
        low, high = math.log(MIN_F0_HZ), math.log(MAX_F0_HZ)
        return low + (high - low) * torch.sigmoid(prediction[:, -1])

    def resolve_phase(self, prediction: Tensor) -> Tensor:
        """``predict``'s output -> [B, 2 * bins, F]: the real, then imaginary parts of each frame's spectrum.

        Frame-local for direct phase. For integrated phase and the harmonic excitation, frame 0 of
        ``prediction`` is frame 0 of the signal, so pass a whole input (the sums run over every earlier frame),
        not a window of one; or pass it in consecutive pieces through ``resolve_phase_from``.
        """
        return self.resolve_phase_from(prediction, None)[0]

    def resolve_phase_from(self, prediction: Tensor, state: PhaseState | None) -> tuple[Tensor, PhaseState]:
        """``resolve_phase`` of the frames that follow ``state`` (None: frame 0 of the signal).

        Resolving an input in consecutive pieces, each with the state the previous one returned, gives the
        spectra of resolving it whole: the running sums continue from their last value, adding the same terms
        in the same order.

        Returns:
            the spectra [B, 2 * bins, F_piece], and the state after the piece's last frame.
        """
        done = 0 if state is None else state.frames
        log_magnitude, raw = prediction[:, : 2 * self.num_bins].chunk(2, dim=1)
        deviation_sum = None
        if self.integrated:
            deviation = math.pi * torch.tanh(raw.double())
            if state is not None and state.deviation_sum is not None:
                deviation = torch.cat([state.deviation_sum[..., None], deviation], dim=-1)
            running = torch.cumsum(deviation, dim=-1)[..., -raw.shape[-1] :]
            deviation_sum = running[..., -1]
            bins = torch.arange(self.num_bins, device=raw.device)[:, None]
            frames = torch.arange(done, done + raw.shape[-1], device=raw.device)[None, :]
            # the bin's own advance, reduced modulo n_fft in integers so long inputs lose no precision
            own_advance = ((bins * self.hop_length * frames) % self.n_fft).double() * (
                2 * math.pi / self.n_fft
            )
            phase = torch.remainder(own_advance + running, 2 * math.pi).float()
        else:
            phase = raw
        magnitude = torch.exp(log_magnitude.clamp(max=self.max_log_magnitude))
        real, imaginary = magnitude * torch.cos(phase), magnitude * torch.sin(phase)
        f0 = centre_phase = None
        if self.harmonic:
            gain_real, gain_imaginary = prediction[:, 2 * self.num_bins : 4 * self.num_bins].chunk(2, dim=1)
            previous = None
            if state is not None and state.f0 is not None and state.centre_phase is not None:
                previous = (state.f0, state.centre_phase)
            f0 = self.log_f0(prediction).detach().double().exp()  # float64: it is summed into the phase
            comb_real, comb_imaginary, centre_phase = self._harmonic_comb_from(f0, previous)
            if self.f0_input:  # the comb sounds in voiced frames only
                comb_real, comb_imaginary = (
                    comb_real * prediction[:, -1:],
                    comb_imaginary * prediction[:, -1:],
                )
            real = real + gain_real * comb_real - gain_imaginary * comb_imaginary
            imaginary = imaginary + gain_real * comb_imaginary + gain_imaginary * comb_real
            f0 = f0[:, -1]
        spectra = torch.cat([real, imaginary], dim=1)
        return spectra, PhaseState(done + raw.shape[-1], deviation_sum, f0, centre_phase)

    def harmonic_comb(self, f0: Tensor) -> Tensor:
        """[B, F] F0 in Hz -> [B, bins, F] complex spectra of a harmonic comb, one per frame.

        Every harmonic below Nyquist at unit amplitude; a harmonic's peak is about 1 (the window's sum / 2 is
        divided out). The fundamental's phase at a frame's centre is summed from frame 0 (trapezoid rule).
        """
        real, imaginary, _ = self._harmonic_comb_from(f0, None)
        return torch.complex(real, imaginary)

    def _harmonic_comb_from(
        self, f0: Tensor, previous: tuple[Tensor, Tensor] | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``harmonic_comb`` of frames that follow a frame of F0 ``previous[0]`` [B] and running centre phase
        ``previous[1]`` [B] float64 (None: frame 0 of the signal), as its real and imaginary parts [B, bins, F];
        also the running phase at the last frame."""
        f0 = f0.double()
        radians_per_hertz = float64_constant(
            math.pi * self.hop_length / self.sample_rate, f0
        )  # per half frame
        if previous is None:
            advance = radians_per_hertz * (f0[:, 1:] + f0[:, :-1])
            first = advance.new_zeros(f0.shape[0], 1)
        else:
            last_f0, first = previous[0][:, None].double(), previous[1][:, None]
            advance = radians_per_hertz * (f0 + torch.cat([last_f0, f0[:, :-1]], dim=1))
        running = torch.cumsum(torch.cat([first, advance], dim=-1), dim=-1)[:, -f0.shape[-1] :]
        centre_phase = torch.remainder(running, float64_constant(2 * math.pi, f0))
        real, imaginary = self._comb_spectra(f0, centre_phase)  # [B, F, bins] each
        return real.transpose(1, 2), imaginary.transpose(1, 2), running[:, -1]

    def _comb_spectra(self, f0: Tensor, centre_phase: Tensor) -> tuple[Tensor, Tensor]:
        """F0 [B, F] (Hz) and the comb's phase at each frame's centre [B, F] -> the real and imaginary parts
        [B, F, bins] of each frame's windowed comb, a harmonic's peak about 1 (the window's sum / 2 is divided
        out); ``EXCITATION_BLOCK_FRAMES`` frames at a time (``vqaudio.codec.onnx_export`` overrides it)."""
        spectra = [
            torch.fft.rfft(
                self._comb_frames(f0[:, start : start + EXCITATION_BLOCK_FRAMES], centre_phase[:, start:])
            )
            * (4.0 / self.n_fft)
            for start in range(0, f0.shape[-1], EXCITATION_BLOCK_FRAMES)
        ]
        spectrum = torch.cat(spectra, dim=1)
        return spectrum.real, spectrum.imag

    def _comb_frames(self, f0: Tensor, centre_phase: Tensor) -> Tensor:
        """F0 [B, Fb] (Hz) and the comb's phase at each frame's centre [B, >= Fb] (float64) -> [B, Fb, n_fft] the
        windowed comb of each frame (float32).

        Near each harmonic peak the closed form divides two small sines, so the angle must be exact there: it is
        summed in float64 and reduced modulo pi (the comb's period in the half angle) before the float32 sines,
        where float32 is precise near zero. With the angle in float32 one ulp moved the audio by up to ~4e-3
        (and torch and onnxruntime apart by as much); float64 sines would cost ~3x the comb's time.
        """
        offsets = torch.arange(self.n_fft, device=f0.device, dtype=torch.float64) - self.n_fft // 2
        frequency = f0[..., None].double()  # [B, Fb, 1]
        radians_per_hertz = float64_constant(math.pi / self.sample_rate, frequency)  # half angle per sample
        half_angle = 0.5 * centre_phase[:, : f0.shape[-1], None] + radians_per_hertz * frequency * offsets
        pi = float64_constant(math.pi, frequency)
        half_angle = (half_angle - pi * torch.round(half_angle / pi)).float()  # in [-pi/2, pi/2]
        count = torch.floor(0.5 * self.sample_rate / frequency).float()  # harmonics below Nyquist
        denominator = torch.sin(half_angle)
        # sum_{k=1..K} cos(k theta) = sin(K theta / 2) cos((K + 1) theta / 2) / sin(theta / 2); K at theta = 0
        near_zero = denominator.abs() < 1e-6
        comb = torch.sin(count * half_angle) * torch.cos((count + 1) * half_angle)
        comb = torch.where(near_zero, count, comb / torch.where(near_zero, 1.0, denominator))
        return comb * self.window

    def frames(self, wav: Tensor) -> Tensor:
        """[B, F * hop_length] audio -> [B, F, n_fft]: the samples each output frame's window spans."""
        return frame_signal(wav, self.n_fft, self.hop_length, self.crop_left)

    @property
    def pitch_lead(self) -> int:
        """Samples before its hop's centre at which a frame takes its F0 (``f0_input``): the window's centre for
        ``to_frame`` (n_fft/2 - hop/2 earlier), so that the comb matches the audio the window holds; 0 otherwise
        (``from_frame``'s window centre lies after its hop, and taking F0 there would wait for later codes)."""
        if self.window_placement != "to_frame":
            return 0
        return self.crop_left - (self.n_fft - self.hop_length) // 2

    @property
    def lookahead(self) -> int:
        """Samples of output that wait for the frame after theirs: output sample ``n`` is final once frame
        ``(n + lookahead) // hop_length`` has arrived."""
        return self.crop_left

    def overlap_add(self, spectrum: Tensor) -> Tensor:
        """[B, 2 * bins, F] real and imaginary parts -> [B, F * hop_length]; frame-local."""
        return self.overlap_add_span(spectrum, 0, 0, spectrum.shape[-1] * self.hop_length)

    def overlap_add_span(self, spectrum: Tensor, first_frame: int, start: int, stop: int) -> Tensor:
        """Output samples ``[start, stop)`` of a signal from the spectra [B, 2 * bins, m] of its frames
        ``first_frame, ..., first_frame + m - 1``: [B, stop - start].

        Exact (as ``overlap_add`` of every frame) where every frame whose window reaches those samples is given;
        at the signal's ends, where ``first_frame`` is 0 or the last frame is the signal's, the windows' edges
        are divided as ``overlap_add`` divides them. Streaming decodes through it (``vqaudio.codec.streaming``).
        """
        num_frames = spectrum.shape[-1]
        real, imaginary = spectrum.chunk(2, dim=1)  # [B, bins, m] each
        frames = self._inverse_frames(real, imaginary) * self.window[:, None]  # [B, n_fft, m]
        signal = self._overlap(frames)  # [B, (m - 1) * hop + n_fft], from raw sample first_frame * hop
        squared_window = self.window.square()[None, :, None].expand(1, self.n_fft, num_frames)
        envelope = self._overlap(squared_window)[0]
        offset = first_frame * self.hop_length - self.crop_left  # output sample of signal[:, 0]
        begin, end = start - offset, stop - offset
        if begin < 0 or end > signal.shape[-1]:
            raise ValueError(
                f"overlap_add_span: samples [{start}, {stop}) are outside frames {first_frame}.."
                f"{first_frame + num_frames - 1}"
            )
        return signal[:, begin:end] / envelope[begin:end].clamp(min=self.envelope_floor)

    def _inverse_frames(self, real: Tensor, imaginary: Tensor) -> Tensor:
        """Spectra [B, bins, F] -> [B, n_fft, F] inverse real FFTs (``vqaudio.codec.onnx_export`` overrides it)."""
        return torch.fft.irfft(torch.complex(real, imaginary), n=self.n_fft, dim=1)

    def _overlap(self, frames: Tensor) -> Tensor:
        """[B, n_fft, F] -> [B, (F - 1) * hop + n_fft]: frame ``j`` added at ``j * hop`` (``F.fold``;
        ``vqaudio.codec.onnx_export`` overrides it)."""
        raw_length = (frames.shape[-1] - 1) * self.hop_length + self.n_fft
        fold = dict(output_size=(1, raw_length), kernel_size=(1, self.n_fft), stride=(1, self.hop_length))
        return F.fold(frames, **fold)[:, 0, 0]
