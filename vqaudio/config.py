"""Configuration: frozen dataclasses are the single home of every default.

A recipe (YAML) overrides some fields, of the defaults or of another recipe (``base:``); loading rejects
unknown keys and wrong types, so a typo in a recipe fails loudly instead of silently training the default.
The resolved config is saved with every model (``config.json``) and read back from there on load and resume.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

import yaml

from vqaudio.errors import InputError

T = TypeVar("T")


class ConfigError(InputError):
    """A recipe or saved config that does not match the dataclasses, or a value outside its declared range."""


# --------------------------------------------------------------------------------------------------
# Limits: every numeric field declares its allowed range next to its default (``limited``)
# --------------------------------------------------------------------------------------------------
# config.json of a model file is not covered by its weights hash, and a recipe is typed by hand: a size read
# from either is bounded here before anything is built from it, so a wrong value is a one-line error naming the
# file and the field instead of a traceback, a division by zero or an allocation of many GB. The bounds are
# generous (far above any model trained so far); raise one here, next to its field, when a real model needs it.
class Range(NamedTuple):
    """Allowed values ``[low, high]`` (``(low`` or ``high)`` when open); lists are checked item by item."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    max_items: int | None = None  # for a list: at most this many items

    def __str__(self) -> str:
        def number(value: float) -> str:
            return str(value) if isinstance(value, int) else f"{value:g}"

        opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{opening}{number(self.low)}, {number(self.high)}{closing}"

    def problem(self, value: Any) -> str | None:
        """None when ``value`` (a number, None, or a list of numbers) is allowed, else what is wrong with it."""
        items = value if isinstance(value, (tuple, list)) else (value,)
        if self.max_items is not None and len(items) > self.max_items:
            return f"{len(items)} items, more than the {self.max_items} allowed"
        for item in items:
            if item is None or isinstance(item, (str, bool)):  # None: "not set"; types are _coerce's business
                continue
            above = item > self.low if self.low_open else item >= self.low
            below = item < self.high if self.high_open else item <= self.high
            if not (above and below):  # also NaN
                return f"{item!r} is outside the allowed range {self}"
        return None


def limited(default: Any, allowed: Range) -> Any:
    """A dataclass field with ``default`` whose values must lie in ``allowed`` (checked by ``check_ranges``)."""
    return field(default=default, metadata={"range": allowed})


def check_ranges(cls: type, values: Mapping[str, Any], where: str) -> None:
    """Raise ConfigError for the first of ``values`` (field name -> value of dataclass ``cls``) that lies
    outside its field's declared range; ``where`` names the section (``recipe.yaml.model.encoder``)."""
    for item in dataclasses.fields(cls):
        allowed = item.metadata.get("range")
        if allowed is None or item.name not in values:
            continue
        problem = allowed.problem(values[item.name])
        if problem is not None:
            raise ConfigError(f"{where}.{item.name}: {problem}")


def check_value(name: str, value: Any, allowed: Range) -> None:
    """Raise ConfigError (a ValueError) when a run-time option is outside ``allowed``; ``name`` as the user
    spells it (``--chunk-seconds``, ``Tokenizer.encode(chunk_seconds=...)``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number in {allowed}, got {value!r}")
    problem = allowed.problem(value)
    if problem is not None:
        raise ConfigError(f"{name}: {problem}")


class _Checked:
    """Base of the config dataclasses: construction checks every declared range (from Python too)."""

    def __post_init__(self) -> None:
        values = {item.name: getattr(self, item.name) for item in dataclasses.fields(self)}  # type: ignore[arg-type]
        check_ranges(type(self), values, type(self).__name__)


# Shared ranges (one name, one meaning)
SAMPLE_RATE = Range(1000, 384000)  # Hz
CHANNELS = Range(1, 4096)  # widths of convolutions and embeddings
KERNEL = Range(1, 63)
STRIDES = Range(1, 64, max_items=8)
HOP = Range(1, 65536)  # samples per frame, at every level (mel, iSTFT, STFT losses, the whole encoder)
FFT = Range(16, 65536)
FFT_SIZES = Range(16, 65536, max_items=16)
HOP_SIZES = Range(1, 65536, max_items=16)
LAYERS = Range(0, 16)
DILATION_BASE = Range(1, 8)
NUM_CODEBOOKS = Range(1, 64)
CODEBOOK_SIZE = Range(2, 65536)
WEIGHT = Range(0, 1e6)  # loss weights
FRACTION = Range(0.0, 1.0)
STEPS = Range(0, 10**9)  # step counts that may be 0
EVERY = Range(1, 10**9)  # step counts and cadences that must be positive (max_steps, *_every)
LEARNING_RATE = Range(0, 10, low_open=True)
BETAS = Range(0.0, 1.0, high_open=True)
SEED = Range(0, 2**32 - 1)
BATCH = Range(1, 65536)
TEMPERATURE = Range(0.01, 100.0)  # softmax temperatures (the Gumbel quantizer's)
FSQ_LEVELS = Range(2, CODEBOOK_SIZE.high, max_items=16)  # levels per FSQ dimension
# the first codebook's hold margin (quantization/residual.py, held_first_codes): a relative slack on squared errors
FIRST_CODEBOOK_HOLD = Range(0.0, 100.0)
# Run-time options, checked by the CLI and the API functions that take them
THREADS = Range(0, 1024)  # torch intra-op threads (0: torch's default)
CHUNK_SECONDS = Range(0.01, 3600)  # windows of long inputs (tokenize, resynth, Tokenizer.encode/decode)
# 10 s windows: peak memory ~90 MB below 30 s windows, at the same speed; the codes do not depend on it
DEFAULT_CHUNK_SECONDS = 10.0
SAMPLE_SECONDS = Range(0, 3600, low_open=True)  # prior sample --seconds and --prompt-seconds; Prior.generate
NUM_SAMPLES = Range(1, 1024)  # prior sample -n
# vqaudio serve (vqaudio.serve.service.ServeLimits): what one request may hold, and how many run at once
SERVE_SECONDS = Range(0, 3600, low_open=True)  # --max-seconds: audio per request (in or out)
SERVE_BYTES = Range(1024, 1 << 30)  # --max-bytes: a request body
SERVE_CONCURRENCY = Range(1, 1024)  # --max-concurrency: requests admitted at once (read, queued or running)
SERVE_WORKERS = Range(1, 64)  # --workers: model calls at once
SERVE_BODY_TIMEOUT = Range(0, 3600, low_open=True)  # --body-timeout: seconds to receive a request body
MAX_HOP_LENGTH = HOP.high  # the encoder's whole hop (mel hop x strides)
MAX_DILATION_SPAN = 65536  # samples a residual unit's dilated kernel spans (dilation_base**j x (kernel - 1))


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EncoderConfig(_Checked):
    """Audio -> latent frames. ``input`` picks the front-end."""

    input: Literal["waveform", "mel"] = "waveform"
    # width after the input conv; doubles at every downsampling (capped by max_channels)
    channels: int = limited(32, CHANNELS)
    max_channels: int = limited(512, CHANNELS)
    strides: tuple[int, ...] = limited((2, 4, 5, 8), STRIDES)  # downsampling factors, applied in order
    num_residual_layers: int = limited(1, LAYERS)  # residual units before each downsampling
    kernel_size: int = limited(7, KERNEL)
    residual_kernel_size: int = limited(3, KERNEL)
    dilation_base: int = limited(2, DILATION_BASE)  # residual unit j uses dilation dilation_base**j
    # mel front-end only: log-mel frames at mel_hop_length, then the strided convs above
    n_mels: int = limited(80, Range(1, 1024))
    mel_n_fft: int = limited(640, FFT)
    mel_hop_length: int = limited(160, HOP)


@dataclass(frozen=True)
class QuantizerConfig(_Checked):
    """The bottleneck: residual VQ (``residual``) or multi-codebook / product VQ (``group``), stacking
    codebooks of one kind (``codebook``). Fields marked vq, gumbel or fsq apply to that kind only."""

    kind: Literal["residual", "group"] = "residual"
    # what each codebook is (vqaudio/codec/quantization/): "vq" nearest code (vq.py; EMA or gradient codes,
    # k-means, restarts), "gumbel" Gumbel-softmax over learned logits (gumbel.py), "fsq" finite scalar
    # quantization, a fixed grid of prod(fsq_levels) codes (fsq.py)
    codebook: Literal["vq", "gumbel", "fsq"] = "vq"
    num_codebooks: int = limited(8, NUM_CODEBOOKS)  # RVQ stages, or groups for GroupVQ
    codebook_size: int = limited(1024, CODEBOOK_SIZE)  # fsq: must equal prod(fsq_levels)
    # vq: None: the stage/group dimension; smaller: factorised L2-normalised codes
    codebook_dim: int | None = limited(None, CHANNELS)
    commitment_weight: float = limited(0.25, WEIGHT)  # vq: beta in ||z - sg(q)||^2
    codebook_weight: float = limited(1.0, WEIGHT)  # vq: weight of ||sg(z) - q||^2 (unused with EMA updates)
    ema: bool = True  # vq: EMA codebook updates instead of the codebook loss
    ema_decay: float = limited(0.99, FRACTION)  # vq
    laplace_epsilon: float = limited(1e-5, FRACTION)  # vq: Laplace smoothing of EMA cluster sizes
    kmeans_init: bool = True  # vq: initialise codebooks with k-means on the first training batch
    kmeans_iters: int = limited(10, Range(0, 1000))  # vq
    # vq: a code unused for this many training steps is re-seeded (0: never)
    dead_code_steps: int = limited(200, STEPS)
    # vq and gumbel: evens out code usage, in nats (vq: a penalty on soft nearest-code usage, RVQ: first stage
    # only, quantization/vq.py; gumbel: KL of the batch's mean code distribution to uniform, every stage)
    usage_entropy_weight: float = limited(0.0, WEIGHT)
    # gumbel: temperature of the straight-through soft sample, annealed from start to end over
    # gumbel_anneal_steps training steps (then end), exponentially or along a half cosine
    gumbel_temperature_start: float = limited(0.5, TEMPERATURE)
    gumbel_temperature_end: float = limited(0.1, TEMPERATURE)
    gumbel_anneal_steps: int = limited(10000, EVERY)
    gumbel_anneal: Literal["exponential", "cosine"] = "exponential"
    # fsq: levels of each projected dimension ([8, 8, 4, 4]: 1024 codes; [8, 5, 5, 5]: 1000)
    fsq_levels: tuple[int, ...] = limited((8, 8, 4, 4), FSQ_LEVELS)
    # RVQ: probability that a training example uses a random n_q < num_codebooks
    quantizer_dropout: float = limited(0.5, FRACTION)
    # RVQ, encoding only (training never holds): a frame keeps the previous frame's first code while the error
    # of all K stages with it is within (1 + margin) x the error with its own first code; the later stages
    # absorb the difference (longer first-codebook runs; quantization/residual.py, held_first_codes). 0: off.
    # The default of Tokenizer.first_codebook_hold; encode(..., hold=) and `vqaudio tokenize --hold` override it.
    first_codebook_hold: float = limited(0.0, FIRST_CODEBOOK_HOLD)


@dataclass(frozen=True)
class DecoderConfig(_Checked):
    """Latent frames -> waveform. ``output`` picks the head."""

    output: Literal["waveform", "istft"] = "waveform"
    # width before the output conv (doubles towards the latent, mirroring the encoder)
    channels: int = limited(32, CHANNELS)
    max_channels: int = limited(512, CHANNELS)
    strides: tuple[int, ...] = limited((8, 5, 4, 2), STRIDES)  # upsampling factors, applied in order
    num_residual_layers: int = limited(1, LAYERS)
    kernel_size: int = limited(7, KERNEL)
    residual_kernel_size: int = limited(3, KERNEL)
    dilation_base: int = limited(2, DILATION_BASE)
    # istft head only: the strides upsample the latent to istft_hop_length, then an iSTFT makes samples
    istft_n_fft: int = limited(640, FFT)
    istft_hop_length: int = limited(160, HOP)
    # "direct": each frame's phase (Vocos); "integrated": a deviation from each bin's own advance, summed over
    # frames, which gives steady harmonics a phase-continuous default (vqaudio/codec/istft.py)
    istft_phase: Literal["direct", "integrated"] = "direct"
    # "harmonic": the head also predicts F0 and adds its harmonic comb times predicted gains (a source-filter
    # branch that gives voiced frames harmonic lines and a steady phase; vqaudio/codec/istft.py); direct phase
    istft_excitation: Literal["none", "harmonic"] = "none"
    # Where each iSTFT frame's n_fft window sits against the hop of samples it stands for (vqaudio/codec/istft.py):
    # "centred" on it; "from_frame": starting at it, so no output sample waits for a later frame, but each frame
    # describes n_fft - hop samples past its own; "to_frame": ending with it, so a frame describes only audio
    # up to its own, and each output sample waits for the next n_fft / hop - 1 frames (30 ms at 640 / 160).
    # "auto": "centred", or "from_frame" for a causal model (what every model before this option did).
    istft_window: Literal["auto", "centred", "from_frame", "to_frame"] = "auto"


@dataclass(frozen=True)
class PitchConfig(_Checked):
    """F0 and voicing sent in the tokens, as Codec2 sends its pitch: a pitch row before the codebooks.

    One code per token frame: 0 unvoiced, 1..levels-1 log-F0 in equal steps over [min_f0, max_f0] (255 steps
    over 50-550 Hz are 16 cents each). The decoder's harmonic excitation follows the sent F0. The estimator
    (``vqaudio.codec.pitch``) and its thresholds are part of the tokens: changing them changes the codes.
    """

    levels: int = limited(0, Range(0, CODEBOOK_SIZE.high))  # 0: no pitch row; e.g. 256 (8 bits per frame)
    min_f0: float = limited(50.0, Range(0, SAMPLE_RATE.high / 4, low_open=True))
    max_f0: float = limited(550.0, Range(0, SAMPLE_RATE.high / 4, low_open=True))
    # voicing thresholds of the estimator (NCCF at the period, depth of YIN's dip), chosen on the fillets dev
    # voices against Praat (benchmarks/pitch_trackers.py): voicing recall 0.91, precision 0.85
    voicing_threshold: float = limited(0.55, FRACTION)
    voiced_dip: float = limited(0.5, FRACTION)


@dataclass(frozen=True)
class ModelConfig(_Checked):
    sample_rate: int = limited(16000, SAMPLE_RATE)
    latent_dim: int = limited(128, CHANNELS)
    causal: bool = False  # causal padding everywhere: a frame never depends on later audio
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    pitch: PitchConfig = field(default_factory=PitchConfig)

    @property
    def hop_length(self) -> int:
        """Samples per token frame."""
        base = self.encoder.mel_hop_length if self.encoder.input == "mel" else 1
        return base * math.prod(self.encoder.strides)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def pitch_rows(self) -> int:
        """Rows of the token array before the codebooks: 1 with a pitch row, else 0."""
        return 1 if self.pitch.levels else 0

    @property
    def pitch_bits(self) -> float:
        """Bits per frame of the pitch row (0 without one)."""
        return math.log2(self.pitch.levels) if self.pitch.levels else 0.0

    @property
    def bits_per_frame(self) -> float:
        return self.quantizer.num_codebooks * math.log2(self.quantizer.codebook_size) + self.pitch_bits

    @property
    def bitrate(self) -> float:
        """Bits per second at full ``num_codebooks``."""
        return self.bits_per_frame * self.frame_rate

    def validate(self) -> None:
        """Raise ConfigError (a ValueError) when encoder, decoder and quantizer do not fit together (or make sizes beyond the
        limits: the whole hop, the span of the dilated residual units)."""
        if not 1 <= self.hop_length <= MAX_HOP_LENGTH:
            raise ConfigError(
                f"the encoder hop (mel_hop_length x strides, {self.hop_length} samples) is outside the allowed "
                f"range {Range(1, MAX_HOP_LENGTH)}"
            )
        for name, part in (("encoder", self.encoder), ("decoder", self.decoder)):
            dilation = part.dilation_base ** max(part.num_residual_layers - 1, 0)
            span = dilation * (part.residual_kernel_size - 1)
            if span > MAX_DILATION_SPAN:
                raise ConfigError(
                    f"{name}: dilation_base**(num_residual_layers - 1) x (residual_kernel_size - 1) = {span} "
                    f"samples, more than the {MAX_DILATION_SPAN} allowed; lower dilation_base or num_residual_layers"
                )
        dec = self.decoder
        dec_hop = (dec.istft_hop_length if dec.output == "istft" else 1) * math.prod(dec.strides)
        if dec_hop != self.hop_length:
            raise ConfigError(
                f"decoder upsamples by {dec_hop} samples per frame but the encoder hop is {self.hop_length}; "
                "make prod(decoder.strides) (times istft_hop_length for the istft head) equal the encoder hop"
            )
        if dec.istft_phase != "direct" and dec.output != "istft":
            raise ConfigError(
                f"decoder.istft_phase={dec.istft_phase!r} needs decoder.output='istft' (a waveform head has no "
                "phase); set decoder.output: istft or drop istft_phase"
            )
        if dec.istft_window != "auto" and dec.output != "istft":
            raise ConfigError(
                f"decoder.istft_window={dec.istft_window!r} needs decoder.output='istft' (a waveform head has no "
                "synthesis windows); set decoder.output: istft or drop istft_window"
            )
        if dec.istft_excitation != "none" and (dec.output != "istft" or dec.istft_phase != "direct"):
            raise ConfigError(
                f"decoder.istft_excitation={dec.istft_excitation!r} needs decoder.output='istft' with "
                "istft_phase='direct'"
            )
        q = self.quantizer
        if q.kind == "group" and self.latent_dim % q.num_codebooks:
            raise ConfigError(
                f"group VQ splits latent_dim={self.latent_dim} into num_codebooks={q.num_codebooks} groups; "
                "choose a latent_dim divisible by num_codebooks"
            )
        if q.codebook_size < 2:
            raise ConfigError(f"codebook_size must be at least 2, got {q.codebook_size}")
        if q.codebook == "fsq" and math.prod(q.fsq_levels) != q.codebook_size:
            raise ConfigError(
                f"model.quantizer.codebook: fsq makes prod(fsq_levels) = {' x '.join(map(str, q.fsq_levels))} = "
                f"{math.prod(q.fsq_levels)} codes, but codebook_size is {q.codebook_size}; set codebook_size: "
                f"{math.prod(q.fsq_levels)} or levels whose product is {q.codebook_size}"
            )
        if q.codebook != "vq" and q.codebook_dim is not None:
            raise ConfigError(
                f"model.quantizer.codebook_dim (factorised codes) is for codebook: vq, not {q.codebook}; remove it"
                + (" (fsq's code space has len(fsq_levels) dimensions)" if q.codebook == "fsq" else "")
            )
        if q.codebook == "fsq" and q.usage_entropy_weight > 0:
            raise ConfigError(
                "model.quantizer.usage_entropy_weight is for codebook: vq or gumbel (fsq's fixed grid has no "
                "codebook to spread); set it to 0"
            )
        if q.num_codebooks < 1:
            raise ConfigError(f"num_codebooks must be at least 1, got {q.num_codebooks}")
        if q.first_codebook_hold > 0 and q.kind != "residual":
            raise ConfigError(
                f"model.quantizer.first_codebook_hold={q.first_codebook_hold} holds the first stage of a residual "
                f"VQ (its later stages absorb the difference), not of kind: {q.kind}; set it to 0"
            )
        if self.encoder.input == "mel" and self.encoder.mel_n_fft < self.encoder.mel_hop_length:
            raise ConfigError("encoder.mel_n_fft must be at least encoder.mel_hop_length")
        pitch = self.pitch
        if pitch.levels:
            if pitch.levels < 3 or pitch.levels > q.codebook_size:
                raise ConfigError(
                    f"pitch.levels must be 0 (no pitch row) or between 3 and codebook_size={q.codebook_size}, "
                    f"got {pitch.levels}"
                )
            if not 0 < pitch.min_f0 < pitch.max_f0 < self.sample_rate / 4:
                raise ConfigError(
                    f"pitch needs 0 < min_f0 < max_f0 < sample_rate / 4, got {pitch.min_f0} and {pitch.max_f0}"
                )
            if dec.output != "istft" or dec.istft_excitation != "harmonic":
                raise ConfigError(
                    "a pitch row (pitch.levels > 0) drives the harmonic excitation: set decoder.output: istft and "
                    "decoder.istft_excitation: harmonic"
                )


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiscriminatorConfig(_Checked):
    """The discriminators of adversarial training (vqaudio.codec.discriminators)."""

    # one multi-period (waveform) discriminator per period
    periods: tuple[int, ...] = limited((2, 3, 5, 7, 11), Range(1, 1024, max_items=16))
    period_channels: int = limited(16, CHANNELS)  # first layer's width; doubles per layer
    # one complex-STFT discriminator per FFT size
    stft_fft_sizes: tuple[int, ...] = limited((512,), FFT_SIZES)
    stft_channels: int = limited(16, CHANNELS)


@dataclass(frozen=True)
class LossConfig(_Checked):
    waveform_l1_weight: float = limited(0.1, WEIGHT)
    # multi-resolution STFT loss (spectral convergence + log magnitude)
    stft_weight: float = limited(1.0, WEIGHT)
    stft_fft_sizes: tuple[int, ...] = limited((512, 1024, 2048), FFT_SIZES)
    stft_hop_sizes: tuple[int, ...] = limited((128, 256, 512), HOP_SIZES)
    stft_win_sizes: tuple[int, ...] = limited((512, 1024, 2048), HOP_SIZES)
    mel_weight: float = limited(1.0, WEIGHT)  # L1 between log-mel spectrograms
    # one resolution, or a list per setting for a multi-scale mel loss (the mean over resolutions, as DAC;
    # a single number is shared by every resolution)
    mel_n_fft: int | tuple[int, ...] = limited(1024, FFT_SIZES)
    mel_hop_length: int | tuple[int, ...] = limited(256, HOP_SIZES)
    mel_n_mels: int | tuple[int, ...] = limited(80, Range(1, 1024, max_items=16))
    # 1 - STOI-style correlation of band envelopes over 384 ms segments (vqaudio.codec.losses.EnvelopeCorrelationLoss);
    # 0: off. Needs crops of at least 0.39 s.
    envelope_weight: float = limited(0.0, WEIGHT)
    # L1 between the log-F0 the harmonic excitation predicts and vqaudio.codec.pitch's estimate, on voiced frames
    pitch_weight: float = limited(0.0, WEIGHT)
    # cross-entropy of the phone each frame covers, predicted linearly from the frame's first-codebook vector
    # (straight-through to the encoder): makes the first codebook phonetic. Needs phone labels for some of the
    # training audio (`vqaudio train --phones ALIGNMENTS`, folders of `vqaudio align`); 0: off.
    phone_weight: float = limited(0.0, WEIGHT)
    # multiplies the quantizer's own (codebook + commitment) loss
    quantizer_weight: float = limited(1.0, WEIGHT)
    # Adversarial training (least-squares GAN + feature matching); 0 turns the discriminators off.
    adversarial_weight: float = limited(0.0, WEIGHT)
    # L1 between discriminator activations, relative to the real ones
    feature_matching_weight: float = limited(0.0, WEIGHT)
    # train without discriminators before this step (warm start)
    adversarial_start_step: int = limited(0, STEPS)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)


@dataclass(frozen=True)
class TrainConfig(_Checked):
    seed: int = limited(0, SEED)
    batch_size: int = limited(8, BATCH)  # per process
    segment_seconds: float = limited(1.0, Range(0, 600, low_open=True))  # random crop length
    learning_rate: float = limited(1e-3, LEARNING_RATE)
    # None: learning_rate; same warm-up and decay
    discriminator_learning_rate: float | None = limited(None, LEARNING_RATE)
    betas: tuple[float, float] = limited((0.8, 0.99), BETAS)
    weight_decay: float = limited(0.0, Range(0, 10))
    warmup_steps: int = limited(500, STEPS)
    max_steps: int = limited(20000, EVERY)
    lr_decay: Literal["cosine", "none"] = "cosine"
    min_learning_rate_ratio: float = limited(0.05, FRACTION)  # cosine floor, as a fraction of learning_rate
    grad_clip: float = limited(1.0, WEIGHT)  # 0: no clipping
    log_every: int = limited(25, EVERY)
    validate_every: int = limited(1000, EVERY)
    checkpoint_every: int = limited(500, EVERY)  # steps; also written on exit and Ctrl-C
    num_validation_files: int = limited(16, Range(0, 10**6))
    # DataLoader worker processes that decode the crops ahead of the step (each keeps 4 batches ready); 0: the
    # training process decodes them itself. The crops depend on (seed, rank, step) only, never on the worker.
    num_workers: int = limited(0, Range(0, 256))
    num_threads: int = limited(0, THREADS)  # torch intra-op threads per process; 0 keeps torch's default
    # decode the training corpus into memory (int16) when it fits in this many MB per process, instead of
    # decoding a window of the file for every crop (ogg/flac decoding can cost more than a small model); 0: never
    audio_cache_mb: int = limited(1024, Range(0, 10**7))
    # Per-crop augmentation (vqaudio.data.augment): a uniform speed factor (resampling: pitch and formants
    # move like another speaker's; [1, 1] off) and a uniform gain in dB ([0, 0] off).
    speed_perturbation: tuple[float, float] = limited((1.0, 1.0), Range(0.5, 2.0))
    gain_perturbation_db: tuple[float, float] = limited((0.0, 0.0), Range(-60.0, 60.0))
    # Parts left as they are: "encoder", "quantizer" (codebooks, their statistics and restarts; quantizer dropout
    # still applies). Freezing both fine-tunes the decoder alone: a model's tokens stay what they were, though
    # its weights hash changes, and token files and priors are checked against that hash (re-tokenize).
    freeze: tuple[Literal["encoder", "quantizer"], ...] = ()
    # Mixed precision (vqaudio.training.precision): the forward pass under autocast in bfloat16 or float16
    # (fp16: CUDA only, with a gradient scaler); weights, optimizer, losses' spectra and codebooks stay float32
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"


@dataclass(frozen=True)
class Config(_Checked):
    """Everything a tokenizer training run needs; saved with the model."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        samples = self.train.segment_seconds * self.model.sample_rate
        if samples < self.model.hop_length:
            raise ConfigError(
                f"train.segment_seconds={self.train.segment_seconds:g} makes crops of {samples:.0f} samples, "
                f"shorter than one token frame ({self.model.hop_length} samples at {self.model.sample_rate} Hz); "
                "raise it (1.0 is usual)"
            )


# --------------------------------------------------------------------------------------------------
# Token prior (vqaudio.prior): a WaveNet over token frames
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PriorConfig(_Checked):
    """Architecture of the WaveNet token prior; saved with every prior model."""

    # None: taken from the training token file (the saved config holds it); a pitch row counts as a codebook
    num_codebooks: int | None = limited(None, Range(1, NUM_CODEBOOKS.high + 1))
    codebook_size: int | None = limited(None, CODEBOOK_SIZE)  # None: taken from the training token file
    # width of the residual stream; also the size of the token embeddings
    residual_channels: int = limited(128, CHANNELS)
    skip_channels: int = limited(128, CHANNELS)  # width of the summed skip connections
    # width of the per-codebook output MLPs and of the within-frame code embeddings
    head_channels: int = limited(128, CHANNELS)
    kernel_size: int = limited(2, Range(2, 16))  # taps of every dilated causal conv
    # dilations 1, 2, 4, ..., 2**(layers_per_cycle - 1) in each cycle
    layers_per_cycle: int = limited(8, Range(1, 16))
    num_cycles: int = limited(2, Range(1, 64))  # the dilation cycle is repeated this many times
    dropout: float = limited(0.0, Range(0.0, 1.0, high_open=True))  # on the gated activations, training only
    # global conditioning ids (speakers); 0: unconditioned; set from --manifest
    num_conditions: int = limited(0, Range(0, 10**5))
    condition_dim: int = limited(32, CHANNELS)  # size of the learned conditioning vector added in every layer
    # the head of codebook k also sees code k of the previous frame through its own embedding: the trunk's input
    # sums the K code embeddings of a frame, which blurs each code (without this, a bigram beat the embedded
    # prior on codebook 1)
    previous_code_in_head: bool = False


@dataclass(frozen=True)
class PriorTrainConfig(_Checked):
    seed: int = limited(0, SEED)
    batch_size: int = limited(16, BATCH)
    # random fixed-length windows of frames, within one utterance
    window_frames: int = limited(256, Range(1, 2**20))
    learning_rate: float = limited(2e-3, LEARNING_RATE)
    betas: tuple[float, float] = limited((0.9, 0.98), BETAS)
    # AdamW; not applied to embeddings, biases and the start frame
    weight_decay: float = limited(0.01, Range(0, 10))
    warmup_steps: int = limited(200, STEPS)
    max_steps: int = limited(5000, EVERY)
    lr_decay: Literal["cosine", "none"] = "cosine"  # after warm-up (vqaudio.training.schedule)
    min_learning_rate_ratio: float = limited(0.05, FRACTION)  # cosine floor, as a fraction of learning_rate
    grad_clip: float = limited(1.0, Range(0, 1e6, low_open=True))
    log_every: int = limited(25, EVERY)
    validate_every: int = limited(250, EVERY)
    checkpoint_every: int = limited(250, EVERY)  # steps; also written on exit and Ctrl-C
    # utterances held out for validation without --valid (0: none)
    holdout_fraction: float = limited(0.05, Range(0.0, 1.0, high_open=True))
    # validation reads at most this many frames (whole utterances)
    max_validation_frames: int = limited(50000, Range(1, 2**40))
    keep_best: bool = True  # the released model is the one with the best validation loss
    tensorboard: bool = True
    num_threads: int = limited(0, THREADS)  # torch intra-op threads; 0 keeps torch's default
    # the network under autocast in bfloat16 or float16 (fp16: CUDA only); see TrainConfig.precision
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"


@dataclass(frozen=True)
class PriorRunConfig(_Checked):
    """Everything a prior training run needs (``vqaudio prior train --config``); saved with the model."""

    prior: PriorConfig = field(default_factory=PriorConfig)
    train: PriorTrainConfig = field(default_factory=PriorTrainConfig)


# A token file's description (out.meta.json, vqaudio.io.token_file) and a prior's ``tokens`` record hold the
# geometry of the model that made the tokens: the same limits as the model's fields.
TOKEN_META_RANGES: dict[str, Range] = {
    "sample_rate": SAMPLE_RATE,
    "hop_length": Range(1, MAX_HOP_LENGTH),
    "frame_rate": Range(0, SAMPLE_RATE.high, low_open=True),
    "num_codebooks": Range(1, NUM_CODEBOOKS.high + 1),  # rows stored: the codebooks, after a pitch row if any
    "codebook_size": CODEBOOK_SIZE,
    "pitch_rows": Range(0, 1),
    "num_utterances": Range(0, 2**62),
    "num_frames": Range(0, 2**62),
}


def check_token_meta(meta: Mapping[str, Any], where: str) -> None:
    """Raise ConfigError naming ``where`` and the field when a recorded token geometry is not a whole number
    (``frame_rate``: a number) in ``TOKEN_META_RANGES``; fields that are absent are not checked."""
    for key, allowed in TOKEN_META_RANGES.items():
        if key not in meta:
            continue
        value = meta[key]
        number = (int, float) if key == "frame_rate" else (int,)
        if isinstance(value, bool) or not isinstance(value, number):
            kind = "a number" if key == "frame_rate" else "an integer"
            raise ConfigError(f"{where}: field {key!r} must be {kind} in {allowed}, got {value!r}")
        problem = allowed.problem(value)
        if problem is not None:
            raise ConfigError(f"{where}: field {key!r}: {problem}")
    if "pitch_rows" in meta and "num_codebooks" in meta and meta["pitch_rows"] >= meta["num_codebooks"]:
        raise ConfigError(
            f"{where}: pitch_rows {meta['pitch_rows']} leaves no codebook of the {meta['num_codebooks']} rows"
        )


# --------------------------------------------------------------------------------------------------
# Strict (de)serialisation
# --------------------------------------------------------------------------------------------------
class RetiredKey(NamedTuple):
    """A key of an earlier version whose option was deleted because it did not help (docs/EXPERIMENTS.md,
    "Options retired in the redesign")."""

    path: str  # as a recipe spells it, e.g. loss.phase_weight
    version: str  # the first version without it
    # The value that left the option off: a saved config that holds it loads as before. None: a setting of its
    # section's retired switch (loss.phase_n_fft of loss.phase_weight), which meant nothing with the switch off;
    # any value loads, and a switch that was on is an error of its own.
    off: bool | float | None


# Saved models and run folders of earlier versions hold these keys (the embedded model does, at the off value).
# from_dict drops a retired key that did nothing; one that switched its option on is a ConfigError, since this
# version cannot train or run what it asked for.
RETIRED_KEYS: dict[type, dict[str, RetiredKey]] = {
    EncoderConfig: {"pitch_features": RetiredKey("model.encoder.pitch_features", "0.2", False)},
    QuantizerConfig: {"rare_code_fraction": RetiredKey("model.quantizer.rare_code_fraction", "0.2", 0.0)},
    LossConfig: {
        "phase_weight": RetiredKey("loss.phase_weight", "0.2", 0.0),
        "phase_n_fft": RetiredKey("loss.phase_n_fft", "0.2", None),
        "phase_hop_length": RetiredKey("loss.phase_hop_length", "0.2", None),
    },
}


def _drop_retired(cls: type, data: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """``data`` without the retired keys of ``cls``; ConfigError for one whose value switched its option on."""
    retired = RETIRED_KEYS.get(cls)
    if not retired:
        return data
    for key, value in data.items():
        entry = retired.get(key)
        if entry is None or entry.off is None:
            continue
        # 0 is the float 0.0, but false is not: a bool and a number are never the same setting here
        if value != entry.off or isinstance(value, bool) != isinstance(entry.off, bool):
            raise ConfigError(
                f"`{entry.path}` was retired in {entry.version} (measured not to help: docs/EXPERIMENTS.md); "
                f"remove it from {where} (it is {value!r} there; only {entry.off!r}, the option off, still "
                "loads)"
            )
    return {key: value for key, value in data.items() if key not in retired}


def to_dict(obj: Any) -> dict[str, Any]:
    """Dataclass -> plain JSON/YAML-ready dict (tuples become lists)."""

    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (tuple, list)):
            return [convert(v) for v in value]
        return value

    return convert(obj)


def from_dict(cls: type[T], data: Mapping[str, Any] | None, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError.

    Missing keys keep their defaults, so a recipe only states what it changes. Keys of deleted options
    (``RETIRED_KEYS``) are dropped when they left the option off, and are a ConfigError otherwise.
    """
    if data is None:
        raise ConfigError(
            f"{where}: is empty (null); give the fields it changes, or remove it to keep every default"
        )
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    data = _drop_retired(cls, data, where)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys are {sorted(names)}")
    kwargs = {key: _coerce(hints[key], value, f"{where}.{key}") for key, value in data.items()}
    check_ranges(cls, kwargs, where)
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # the checks across fields (__post_init__)
        raise ConfigError(f"{where}: {exc}") from exc


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, Mapping) and not value:  # `model: {}` is a slip, as `model:` (null) is
            raise ConfigError(
                f"{where}: is empty ({{}}); give the fields it changes, or remove it to keep every default"
            )
        return from_dict(tp, value, where)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{where}: unsupported config type {tp!r}")


def load_yaml(path: str | Path, cls: type[T] = Config) -> T:  # type: ignore[assignment]
    """Read a recipe file into ``cls`` (default: the tokenizer's ``Config``).

    A recipe may start from another: ``base: rvq_mel.yaml`` (a path relative to the recipe's own folder) takes
    that recipe's settings and merges this file's over them, key by key in nested mappings (a list or a value
    replaces the base's). Bases may have bases. Every file, and the merged result, is checked strictly.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe not found; pass a YAML file such as recipes/rvq_waveform.yaml")
    try:
        return from_dict(cls, _read_recipe(path, cls, ()), where=path.name)
    except TypeError as exc:  # dataclass __post_init__ style failures
        raise ConfigError(f"{path}: {exc}") from exc


def _read_recipe(path: Path, cls: type, children: tuple[Path, ...]) -> dict[str, Any]:
    """``path``'s mapping merged over its base chain's; ``children``: the recipes that led here, nearest last."""
    try:
        data = yaml.load(path.read_text(), Loader=RecipeLoader) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    except RecursionError as exc:
        raise ConfigError(f"{path}: nested too deeply to be a recipe") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    data = dict(data)
    has_base = "base" in data
    base = data.pop("base", None)
    from_dict(cls, data, where=path.name)  # names the file that holds a typo, before any merging
    if not has_base:
        return data
    if not isinstance(base, str) or not base:
        raise ConfigError(
            f"{path}: base must be the file name of another recipe, e.g. base: rvq_mel.yaml, got {base!r}"
        )
    base_path = path.parent / base
    if not base_path.is_file():
        raise ConfigError(
            f"{path}: base recipe {base_path} not found; base: is read relative to the recipe's own folder "
            f"({path.parent}), fix the path or remove the key"
        )
    chain = (*children, path)
    if base_path.resolve() in {p.resolve() for p in chain}:
        names = " -> ".join(str(p) for p in (*chain, base_path))
        raise ConfigError(f"{path}: recipe bases form a cycle ({names}); remove base: from one of them")
    return _merge(_read_recipe(base_path, cls, chain), data)


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base``: nested mappings key by key, anything else (lists included) replaced."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def replace_path(obj: T, dotted: str, value: Any, _parent: str = "") -> T:
    """Return a copy of a frozen config with ``dotted`` (e.g. ``train.max_steps``) set to ``value``; the value
    is checked like a recipe's (type and range)."""
    head, _, rest = dotted.partition(".")
    if not dataclasses.is_dataclass(obj) or head not in {f.name for f in dataclasses.fields(obj)}:
        raise ConfigError(f"no config field {_parent + dotted!r}")
    if rest:
        inner = replace_path(getattr(obj, head), rest, value, f"{_parent}{head}.")
        return dataclasses.replace(obj, **{head: inner})  # type: ignore
    hints = typing.get_type_hints(type(obj))
    coerced = _coerce(hints[head], value, _parent + dotted)
    check_ranges(type(obj), {head: coerced}, _parent.rstrip(".") or type(obj).__name__)
    return dataclasses.replace(obj, **{head: coerced})  # type: ignore


class RecipeLoader(yaml.SafeLoader):
    """YAML's safe loader, reading ``1e-3`` and ``5E+4`` as numbers as YAML 1.2 and Python do (YAML 1.1, which
    PyYAML follows, wants a dot: ``1.0e-3``; without one the value was a string and the recipe refused)."""


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_override(text: str) -> tuple[str, Any]:
    """``train.max_steps=100`` -> ("train.max_steps", 100); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r} must look like section.field=value, e.g. train.max_steps=200")
    return key.strip(), yaml.load(raw, Loader=RecipeLoader)
