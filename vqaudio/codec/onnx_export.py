"""ONNX export of a tokenizer: ``encoder.onnx`` (audio -> codes) and ``decoder.onnx`` (codes -> audio), any length.

    encoder.onnx   audio float32 [1, samples]            -> codes int64 [P + K, frames]     frames = ceil(samples / hop)
    decoder.onnx   codes int64 [P + K', frames], K' <= K -> audio float32 [1, frames * hop]
    vqaudio_onnx.json  the model's name and weights hash, rates, and these specs

Both graphs hold the whole computation of ``VQVAE.encode`` / ``VQVAE.decode``: the log-mel front end, the pitch
tracker (the pitch row) and the iSTFT head (with the harmonic excitation's running phase) are in the graph, so
onnxruntime needs no preprocessing beyond 16 kHz mono float audio. The export runs ``torch.onnx.export(dynamo=True)``
(``torch.export`` then onnxscript) on a copy of the model in which:

* weight norm is folded into plain weights (``remove_parametrizations``), computed once as torch computes them;
* the STFTs (log-mel, the harmonic comb, the inverse STFT) are matmuls with precomputed DFT bases: onnxruntime's
  DFT of a size that is not a power of two (640) is a direct float32 sum, ~7x slower than the whole encoder and
  up to 0.13 off in log-mel at quiet bins, which changed 1.7% of the embedded model's codes;
* the pitch tracker's autocorrelation FFT has a power-of-two size (1024 instead of 1280 for the 640-sample
  window: the same correlations up to float64 rounding), which onnxruntime computes fast;
* the overlap-add is a sum of shifted frames instead of ``F.fold`` (ONNX's Col2Im);
* the decoder looks codes up in ``quantizer.latent_codebooks()`` without ``check_codes``.

Why the decoder failed ``torch.export`` as it was: ``VQVAE.decode`` validates its codes (``check_codes``: the
range of the codes decides a Python ``if``, a data-dependent guard that export cannot trace), and the harmonic comb
is synthesised in blocks by a Python loop over the number of frames, which export would have to specialise. The
encoder traced as it was. Codes outside their range are therefore not checked by ``decoder.onnx`` (an index out of
range is an onnxruntime error); ``vqaudio_onnx.json`` states the ranges.

Parity with torch (``tests/test_onnx.py``, docs/EXPERIMENTS.md 2026-12-07): codes identical; audio within 1e-4
(measured: 2e-7 without the harmonic excitation; 4e-7 on the embedded model's example clips). The excitation's
F0 and phase are computed in float64 with float64 constants (``vqaudio.features.float64_constant``): a
Python float in a float64 expression is exported as a float32 constant, and its error, summed into the phase
over every frame, had put the audio up to 3e-3 apart.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vqaudio._version import __version__
from vqaudio.codec.istft import ISTFTHead
from vqaudio.codec.pitch import pitch_codes_of_frames, pitch_padding, pitch_window
from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.codec.vqvae import VQVAE, build_model, folded_copy
from vqaudio.errors import InputError
from vqaudio.features import LogMel, frame_signal
from vqaudio.io.atomic import atomic_folder, check_output
from vqaudio.optional import require

log = logging.getLogger(__name__)

ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
SPEC_FILE = "vqaudio_onnx.json"
FILES = (ENCODER_FILE, DECODER_FILE, SPEC_FILE)
SPEC_FORMAT = "vqaudio-onnx"
OPSET = 18
EXTRA = "onnx"
# the export's own check: onnxruntime against torch on a synthetic clip of this many seconds
CHECK_SECONDS = 1.5
AUDIO_TOLERANCE = 1e-4  # the largest |onnxruntime - torch| of decoded audio the check accepts quietly


# --------------------------------------------------------------------------------------------------
# DFT bases
# --------------------------------------------------------------------------------------------------
def _angles(n_fft: int) -> Tensor:
    """[n_fft, bins] float64 ``2 pi k n / n_fft``, reduced modulo n_fft in integers first (exact arguments)."""
    samples = torch.arange(n_fft, dtype=torch.int64)[:, None]
    bins = torch.arange(n_fft // 2 + 1, dtype=torch.int64)[None, :]
    return (samples * bins % n_fft).double() * (2 * math.pi / n_fft)


def rfft_basis(n_fft: int, window: Tensor | None = None) -> Tensor:
    """[n_fft, 2 * bins] float32: ``frames @ basis`` is the real then imaginary parts of ``rfft(frames * window)``."""
    angles = _angles(n_fft)
    basis = torch.cat([torch.cos(angles), -torch.sin(angles)], dim=1)
    if window is not None:
        basis = basis * window.double()[:, None]
    return basis.float()


def irfft_basis(n_fft: int) -> Tensor:
    """[n_fft, 2 * bins] float32: ``basis @ cat([real, imaginary])`` is ``irfft(complex(real, imaginary), n_fft)``
    (the imaginary parts of the DC and Nyquist bins are ignored, as ``torch.fft.irfft`` ignores them)."""
    angles = _angles(n_fft)
    weights = torch.full((n_fft // 2 + 1,), 2.0, dtype=torch.float64)
    weights[0] = 1.0
    if n_fft % 2 == 0:
        weights[-1] = 1.0
    return (torch.cat([torch.cos(angles) * weights, -torch.sin(angles) * weights], dim=1) / n_fft).float()


def _power_of_two(at_least: int) -> int:
    return 1 << max(0, at_least - 1).bit_length()


# --------------------------------------------------------------------------------------------------
# The export copy: the same modules, with the operations onnxruntime runs well
# --------------------------------------------------------------------------------------------------
class _ExportLogMel(LogMel):
    """LogMel whose STFT is a matmul with a windowed DFT basis."""

    dft_basis: Tensor

    def log_mel_of_frames(self, padded: Tensor) -> Tensor:
        frames = padded.unfold(-1, self.n_fft, self.hop_length)  # [B, M, n_fft]
        real, imaginary = (frames @ self.dft_basis).chunk(2, dim=-1)  # [B, M, bins] each
        magnitude = torch.sqrt(real * real + imaginary * imaginary)
        mel = torch.matmul(self.filterbank, magnitude.transpose(1, 2))  # [B, n_mels, M]
        return torch.log(mel.clamp(min=1e-5))


class _ExportISTFTHead(ISTFTHead):
    """ISTFTHead whose FFTs are matmuls and whose overlap-add is a sum of shifted frames; the comb in one block."""

    rfft_basis: Tensor
    irfft_basis: Tensor

    def _comb_spectra(self, f0: Tensor, centre_phase: Tensor) -> tuple[Tensor, Tensor]:
        spectrum = (self._comb_frames(f0, centre_phase) @ self.rfft_basis) * (4.0 / self.n_fft)
        real, imaginary = spectrum.chunk(2, dim=-1)
        return real, imaginary

    def _inverse_frames(self, real: Tensor, imaginary: Tensor) -> Tensor:
        return torch.matmul(self.irfft_basis, torch.cat([real, imaginary], dim=1))  # [B, n_fft, F]

    def _overlap(self, frames: Tensor) -> Tensor:
        """Frame ``j``'s ``r``-th hop of samples lands at ``(j + r) * hop``: one shifted sum per hop of n_fft."""
        batch, n_fft, num_frames = frames.shape
        hop = self.hop_length
        parts = -(-n_fft // hop)
        segments = F.pad(frames, (0, 0, 0, parts * hop - n_fft)).reshape(batch, parts, hop, num_frames)
        signal = None
        for part in range(parts):
            samples = segments[:, part].transpose(1, 2).reshape(batch, num_frames * hop)  # [B, F * hop]
            shifted = F.pad(samples, (part * hop, (parts - 1 - part) * hop))
            signal = shifted if signal is None else signal + shifted
        assert signal is not None
        return signal[:, : (num_frames - 1) * hop + n_fft]


def export_copy(model: VQVAE) -> VQVAE:
    """A float32 CPU copy of ``model`` for export: weight norm folded, the export variants of the log-mel front
    end and the iSTFT head (same parameters, same results up to float rounding)."""
    copied = folded_copy(model, dtype=torch.float32, device="cpu")
    front_end = copied.front_end
    if front_end is not None:
        front_end.__class__ = _ExportLogMel
        front_end.register_buffer(
            "dft_basis", rfft_basis(front_end.n_fft, front_end.window), persistent=False
        )
    head = copied.decoder.head
    if isinstance(head, ISTFTHead):
        head.__class__ = _ExportISTFTHead
        head.register_buffer("rfft_basis", rfft_basis(head.n_fft), persistent=False)
        head.register_buffer("irfft_basis", irfft_basis(head.n_fft), persistent=False)
    return copied


class EncoderGraph(nn.Module):
    """audio [1, T] float32 -> codes [P + K, ceil(T / hop)] int64: ``VQVAE.encode`` of an ``export_copy``."""

    def __init__(self, model: VQVAE) -> None:
        super().__init__()
        self.model = model
        pitch = model.config.pitch
        if model.pitch_rows:
            window = pitch_window(model.sample_rate, pitch.min_f0)
            max_lag = int(model.sample_rate / pitch.min_f0) + 1
            self.pitch_fft = _power_of_two(window + max_lag + 2)

    def forward(self, audio: Tensor) -> Tensor:
        model = self.model
        hop = model.hop_length
        num_frames = (audio.shape[-1] + hop - 1) // hop
        wav = F.pad(audio, (0, num_frames * hop - audio.shape[-1]))
        features = wav[:, None, :] if model.front_end is None else model.front_end(wav)
        codes = model.quantizer.encode(model.encoder(features))  # [1, K, F]
        if model.pitch_rows:
            pitch = model.config.pitch
            window = pitch_window(model.sample_rate, pitch.min_f0)
            frames = frame_signal(wav, window, hop, pitch_padding(hop, model.sample_rate, pitch.min_f0))
            pitch_codes = pitch_codes_of_frames(frames, model.sample_rate, pitch, self.pitch_fft)
            codes = torch.cat([pitch_codes[:, None], codes], dim=1)
        return codes[0]


class DecoderGraph(nn.Module):
    """codes [P + K', F] int64 -> audio [1, F * hop] float32: ``VQVAE.decode`` of an ``export_copy``, codes
    unchecked."""

    codebooks: Tensor

    def __init__(self, model: VQVAE) -> None:
        super().__init__()
        self.model = model
        table = model.quantizer.latent_codebooks()  # [K, C, D]
        self.register_buffer("codebooks", table.reshape(-1, table.shape[-1]), persistent=False)

    def forward(self, codes: Tensor) -> Tensor:
        model = self.model
        rows = codes[model.pitch_rows :]  # [K', F]
        offsets = torch.arange(rows.shape[0], device=rows.device)[:, None] * model.codebook_size
        quantized = self.codebooks[rows + offsets].sum(dim=0).transpose(0, 1)[None]  # [1, D, F]
        if not model.pitch_rows:
            return model.decoder(quantized)
        head = model.decoder.head
        assert isinstance(head, ISTFTHead)
        return head.overlap_add(head.resolve_phase(model._spectrum(quantized, codes[None, 0])))


# --------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------
class OnnxCheck(NamedTuple):
    """onnxruntime against torch on the export's synthetic clip.

    codes_equal: the fraction of equal codes (1.0: identical); audio_max_error: max |onnxruntime - torch| of the
    decoded audio (from the same codes).
    """

    codes_equal: float
    audio_max_error: float


def check_clip(sample_rate: int, seconds: float = CHECK_SECONDS) -> np.ndarray:
    """[T] float32 synthetic voiced speech (harmonics of a gliding F0, a syllable envelope, a little noise)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 120 * (1 + 0.2 * np.sin(2 * np.pi * 1.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20) if k * 170 < sample_rate / 2)
    envelope = np.clip(np.sin(2 * np.pi * 3 * t), 0, None)
    return (0.2 * envelope * voiced + 0.005 * rng.standard_normal(len(t))).astype(np.float32)


def export_onnx(
    tokenizer: Tokenizer, folder: str | Path, *, overwrite: bool = False, check: bool = True
) -> dict[str, Any]:
    """Write ``folder/encoder.onnx``, ``decoder.onnx`` and ``vqaudio_onnx.json`` (a folder replaced as a whole).

    Args:
        tokenizer: the model to export (any device or dtype; the export is float32 on the CPU).
        folder: the output folder.
        overwrite: replace an existing export.
        check: run both graphs in onnxruntime on a synthetic clip and record how they compare with torch
            (``OnnxCheck``); a warning says when the codes are not identical or the audio is off by more than
            ``AUDIO_TOLERANCE``.
    Returns:
        the description written to ``vqaudio_onnx.json``.
    Raises:
        MissingDependency: onnx, onnxscript or onnxruntime is missing (``pip install 'vqaudio[onnx]'``).
    """
    if tokenizer.first_codebook_hold:
        raise InputError(
            f"the exported encoder takes each frame's nearest code; held first-codebook codes "
            f"(first_codebook_hold={tokenizer.first_codebook_hold:g}) are not exported: set "
            "tokenizer.first_codebook_hold = 0 to export nearest codes"
        )
    require("onnxscript", EXTRA, "ONNX export")
    require("onnx", EXTRA, "ONNX export")
    if check:
        require("onnxruntime", EXTRA, "checking the ONNX export")
    folder = check_output(
        folder,
        overwrite=overwrite,
        folder=True,
        replaceable=lambda path: str(path) in FILES,
        what="`vqaudio export-onnx`",
    )
    model = export_copy(tokenizer.model)
    spec = describe(tokenizer)
    with atomic_folder(folder, overwrite=overwrite) as staging:
        start = time.perf_counter()
        _export(EncoderGraph(model), _encoder_example(model), _encoder_shapes(model), staging / ENCODER_FILE)
        _export(DecoderGraph(model), _decoder_example(model), _decoder_shapes(model), staging / DECODER_FILE)
        spec["export_seconds"] = round(time.perf_counter() - start, 1)
        if check:
            result = check_export(staging, tokenizer)
            spec["check"] = {"clip_seconds": CHECK_SECONDS, **result._asdict()}
            if result.codes_equal < 1.0 or result.audio_max_error > AUDIO_TOLERANCE:
                log.warning(
                    "onnxruntime differs from torch on the check clip: %.4f%% of codes equal, audio off by up to %.2g",
                    100 * result.codes_equal,
                    result.audio_max_error,
                )
        (staging / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
    return spec


def describe(tokenizer: Tokenizer) -> dict[str, Any]:
    """The JSON description of an export of ``tokenizer``: where it came from and what the graphs take."""
    model = tokenizer.model
    rows = model.pitch_rows + model.num_codebooks
    pitch = model.config.pitch
    return {
        "format": SPEC_FORMAT,
        "format_version": 1,
        "vqaudio_version": __version__,
        "torch_version": torch.__version__,
        "opset": OPSET,
        "model": tokenizer.name,
        "weights_sha256": tokenizer.hash,
        "sample_rate": model.sample_rate,
        "hop_length": model.hop_length,
        "frame_rate": model.frame_rate,
        "num_codebooks": model.num_codebooks,
        "codebook_size": model.codebook_size,
        "pitch_rows": model.pitch_rows,
        "pitch_levels": pitch.levels if model.pitch_rows else 0,
        "causal": model.config.causal,
        "encoder": {
            "file": ENCODER_FILE,
            "inputs": [{"name": "audio", "dtype": "float32", "shape": [1, "samples"]}],
            "outputs": [{"name": "codes", "dtype": "int64", "shape": [rows, "frames"]}],
            "notes": f"mono audio at {model.sample_rate} Hz in [-1, 1]; frames = ceil(samples / {model.hop_length})",
        },
        "decoder": {
            "file": DECODER_FILE,
            "inputs": [
                {"name": "codes", "dtype": "int64", "shape": [f"{model.pitch_rows} + codebooks", "frames"]}
            ],
            "outputs": [{"name": "audio", "dtype": "float32", "shape": [1, f"frames * {model.hop_length}"]}],
            "notes": (
                f"codebooks 1..{model.num_codebooks} (the first ones); codes in [0, {model.codebook_size})"
                + (f", the pitch row (row 0) in [0, {pitch.levels})" if model.pitch_rows else "")
                + "; not checked in the graph. Crop the audio to the input's length."
            ),
        },
    }


def _encoder_example(model: VQVAE) -> Tensor:
    return torch.from_numpy(check_clip(model.sample_rate, 0.5))[None]


def _decoder_example(model: VQVAE) -> Tensor:
    with torch.inference_mode():
        codes = model.encode(_encoder_example(model))[0]
    return codes.clone()


def _encoder_shapes(model: VQVAE) -> tuple[dict[int, Any], ...]:
    return ({1: torch.export.Dim("samples", min=2, max=2**30)},)


def _decoder_shapes(model: VQVAE) -> tuple[dict[int, Any], ...]:
    rows = torch.export.Dim("rows", min=model.pitch_rows + 1, max=model.pitch_rows + model.num_codebooks)
    return ({0: rows, 1: torch.export.Dim("frames", min=2, max=2**24)},)


@contextmanager
def _without_progress_logs() -> Iterator[None]:
    """The exporter's and the ONNX optimizer's INFO lines (one per folded constant, hundreds) are not shown on a
    console at INFO; their warnings are."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _export(graph: nn.Module, example: Tensor, shapes: tuple[dict[int, Any], ...], path: Path) -> None:
    names = ("audio", "codes") if isinstance(graph, EncoderGraph) else ("codes", "audio")
    with _without_progress_logs():
        program = _export_program(graph, example, shapes, names)
    program.save(str(path))


def _export_program(
    graph: nn.Module, example: Tensor, shapes: tuple[dict[int, Any], ...], names: tuple[str, str]
) -> Any:
    program = torch.onnx.export(
        graph.eval(),
        (example,),
        dynamo=True,
        dynamic_shapes=shapes,
        input_names=[names[0]],
        output_names=[names[1]],
        opset_version=OPSET,
        optimize=True,
        verbose=False,
    )
    if program is None:  # only the legacy exporter returns None
        raise RuntimeError("torch.onnx.export(dynamo=True) returned no program")
    return program


def check_export(folder: Path, tokenizer: Tokenizer, seconds: float = CHECK_SECONDS) -> OnnxCheck:
    """Run the exported graphs in onnxruntime (one thread) on ``check_clip`` and compare with torch."""
    sessions = load_sessions(folder)
    model = build_model(tokenizer.model.config).eval()  # the export is float32 on the CPU
    model.load_state_dict({name: value.float().cpu() for name, value in tokenizer.model.state_dict().items()})
    audio = check_clip(model.sample_rate, seconds)
    with torch.inference_mode():
        codes_tensor = model.encode(torch.from_numpy(audio)[None])[0]
        expected_audio = model.decode(codes_tensor[None])[0].numpy()
    codes = codes_tensor.numpy()
    onnx_codes = sessions.encode(audio)
    onnx_audio = sessions.decode(codes)
    equal = float((onnx_codes == codes).mean()) if onnx_codes.shape == codes.shape else 0.0
    error = (
        float(np.abs(onnx_audio - expected_audio).max())
        if onnx_audio.shape == expected_audio.shape
        else math.inf
    )
    return OnnxCheck(equal, error)


class OnnxSessions(NamedTuple):
    """onnxruntime sessions of an export; ``encode`` [T] -> codes [P + K, F], ``decode`` codes -> audio [F * hop]."""

    encoder: Any
    decoder: Any

    def encode(self, audio: np.ndarray) -> np.ndarray:
        return self.encoder.run(None, {"audio": np.asarray(audio, dtype=np.float32)[None]})[0]

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return self.decoder.run(None, {"codes": np.asarray(codes, dtype=np.int64)})[0][0]


def load_sessions(folder: str | Path, threads: int = 1) -> OnnxSessions:
    """onnxruntime CPU sessions of ``folder/encoder.onnx`` and ``decoder.onnx`` with ``threads`` intra-op threads."""
    ort = require("onnxruntime", EXTRA, "running the ONNX export")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    folder = Path(folder)
    providers = ["CPUExecutionProvider"]
    return OnnxSessions(
        ort.InferenceSession(str(folder / ENCODER_FILE), options, providers=providers),
        ort.InferenceSession(str(folder / DECODER_FILE), options, providers=providers),
    )
