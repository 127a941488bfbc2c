"""The Tokenizer: a trained VQ-VAE (van den Oord et al., 2017, https://arxiv.org/abs/1711.00937) as a
speech <-> token converter, with model files, resampling, batching and long-file chunking.

    tok = Tokenizer.load("exp/run1")          # a model folder or .safetensors file; None: the embedded model
    codes = tok.encode(wav, sample_rate)      # [T] -> [n_q, F];  [B, T] -> [B, n_q, F]
    wav = tok.decode(codes)                   # [n_q, F] -> [F * hop_length] at tok.sample_rate

Batches in the layout Hugging Face codecs use (``EncodecModel.encode(input_values, padding_mask)``): right-padded
audio [B, T] (or [B, 1, T]) with a sample mask (1 = real sample) gives padded codes and a frame mask; padded
frames hold ``PAD_CODE`` (-1), never a real code, so an embedding lookup on them fails instead of reading code 0:

    batch = tok.encode(input_values, 16000, padding_mask=mask)   # TokenBatch: codes [B, P + n_q, F], lengths, ...
    batch.padding_mask                                           # [B, F] 1 on real frames, 0 on PAD frames
    audio = tok.decode(batch.codes, padding_mask=batch.padding_mask)   # [B, F * hop], zeros past each item

The network can run in bfloat16 or float16 (``Tokenizer.load(path, device=..., dtype=...)``, ``tok.to(...)``); the
STFTs, the mel filterbank, the pitch tracker and the iSTFT stay float32 (``vqaudio.features.Float32Constants``).

Long inputs are processed in exact, overlapping windows (``vqaudio.codec.windows``), so memory stays
bounded and tokens never depend on batching or chunking. Files of any length stream from and to disk:

    coded = tok.encode_file("long.flac")      # read in windows: EncodedFile(codes [n_q, F], num_samples)
    pieces = tok.decode_stream(coded.codes, num_samples=coded.num_samples)   # audio, window by window
    save_audio_blocks("out.wav", pieces, tok.sample_rate)                     # vqaudio.io.audio_stream

A decoder whose iSTFT head integrates phase over frames (``decoder.istft_phase: integrated``, the harmonic
excitation, a pitch row) is not local: each frame's phase sums every earlier frame's prediction. ``decode`` then
runs the network in windows to the head's per-frame spectra, sums the phase over the whole input, and
overlap-adds in windows again; the spectra of a whole input are held (2 x (istft_n_fft / 2 + 1) floats per iSTFT
frame, about 1 GB per hour for the rvq_mel geometry). ``decode_stream`` carries the running phase from window to
window instead (``ISTFTHead.resolve_phase_from``), so its memory stays at a window.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, overload

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from vqaudio.codec.istft import ISTFTHead
from vqaudio.codec.vqvae import VQVAE, build_model
from vqaudio.codec.windows import frame_map, stream_windows
from vqaudio.config import CHUNK_SECONDS, DEFAULT_CHUNK_SECONDS, Config, check_value, from_dict, to_dict
from vqaudio.errors import AudioError, InputError, ModelFileError
from vqaudio.io.audio import to_model_input
from vqaudio.io.audio_stream import AudioReader
from vqaudio.io.model_file import (
    WEIGHTS_FILE,
    ExpectedTensors,
    clean_state_dict,
    load_model_file,
    read_meta,
    save_model_file,
    weights_hash,
)
from vqaudio.io.token_file import storage_dtype

if TYPE_CHECKING:
    from vqaudio.codec.streaming import StreamingDecoder, StreamingEncoder

MODEL_FORMAT = "vqaudio-tokenizer"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "pretrained" / "default"
PAD_CODE = -1  # the code of padded frames in a TokenBatch: no codebook index, so a lookup on it fails loudly
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DOWNMIX = ("mean",)

AudioLike = Tensor | np.ndarray
CodesLike = Tensor | np.ndarray
MaskLike = Tensor | np.ndarray


class TokenBatch(NamedTuple):
    """Codes of inputs of unequal lengths, padded to the longest (``encode_batch``, or ``encode`` with a
    ``padding_mask``); each item's codes equal ``encode`` of that item alone.

    codes: [B, P + n_q, F_max] int64 on the model's device; frames at and after ``lengths[i]`` hold
        ``PAD_CODE`` (-1) in every row, which is never a code (``padding_mask`` says which frames are real):
        ``nn.Embedding`` raises on it, but plain indexing (``table[codes]``) wraps -1 to the last row, so mask
        first.
    lengths: [B] int64 (CPU) frames of each input, ``ceil(num_samples / hop_length)``.
    num_samples: [B] int64 (CPU) samples of each input at the model's sample rate (for ``decode`` to crop).
    """

    codes: Tensor
    lengths: Tensor
    num_samples: Tensor

    @property
    def padding_mask(self) -> Tensor:
        """[B, F_max] int64 frame mask on the codes' device: 1 on real frames, 0 on padding (Hugging Face's
        convention, usable as an LM's ``attention_mask``; ``.bool()`` to index)."""
        frames = torch.arange(self.codes.shape[-1], device=self.codes.device)
        return (frames[None, :] < self.lengths.to(self.codes.device)[:, None]).long()

    @property
    def audio_codes(self) -> Tensor:
        """``codes``, by the name Hugging Face codecs give them."""
        return self.codes


class EncodedFile(NamedTuple):
    """The codes of one audio file (``Tokenizer.encode_file``).

    codes: [P + n_q, F] integer codes in the token file's storage dtype (int16 when codebook_size <= 32767), a
        transposed view of a [F, P + n_q] array (the token file's layout).
    num_samples: the file's length at the model's sample rate (for ``decode`` to crop).
    """

    codes: np.ndarray
    num_samples: int


class Tokenizer:
    """A speech tokenizer: audio <-> integer codes ``[n_q, frames]``.

    Args:
        model: the network (put in eval mode here).
        config: the full resolved config the model was built and trained with; ``config.model`` must be the
            model's own config.
        name: a human-readable model name (saved in the model file and in token files).
        training: what the trainer wants to record (steps, data, seed, ...); saved with the model.
    """

    def __init__(
        self,
        model: VQVAE,
        config: Config,
        name: str = "vqaudio",
        training: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(model, VQVAE):
            raise TypeError(f"Tokenizer expects a vqaudio.codec.vqvae.VQVAE, got {type(model).__name__}")
        if not isinstance(config, Config):
            raise TypeError(f"Tokenizer expects a vqaudio.config.Config, got {type(config).__name__}")
        if model.config != config.model:
            raise ValueError(
                "Tokenizer: config.model differs from the model's own config; pass the Config the model was "
                "built from (build_model(config.model))"
            )
        self.model = model.eval()
        self.config = config
        self.name = name
        self.training: dict[str, Any] = dict(training or {})
        self.path: Path | None = None  # the model file it was loaded from or saved to
        self.license: str | None = None  # the weights' licence, when their description states one
        self._hash: str | None = None  # recorded at load/save; computed on demand otherwise
        self._first_codebook_hold = config.model.quantizer.first_codebook_hold

    # ----------------------------------------------------------------------------------------------
    # Files
    # ----------------------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
    ) -> Tokenizer:
        """Load a model written by ``save`` (or by ``vqaudio train``).

        Args:
            path: a model folder (``model.safetensors`` + ``config.json``), a training run folder holding one,
                or a single ``.safetensors`` file (its header holds the config). None or ``"default"``: the
                model embedded in the package (``vqaudio/pretrained/default/``; ``"./default"`` for a folder of
                that name), so every ``--model`` takes ``default``. Nothing is ever downloaded: a Hugging Face
                Hub id (``org/name``) that is no local path is refused.
            device: where the model runs.
            dtype: the weights' dtype (see ``to``): float32 (as trained and saved), bfloat16 or float16.
        Returns:
            the Tokenizer, in eval mode; its weights were loaded with ``strict=True`` and their hash checked.
        Raises:
            ModelFileError: missing, corrupt or modified files, or a config this version cannot read.
            ValueError: a dtype other than those three, or one the device's kernels lack.
        """
        resolved = _resolve_dtype(dtype, torch.device(device))  # before any file is read
        if isinstance(path, str) and path == "default":
            path = None
        if path is None:
            if not (DEFAULT_MODEL_DIR / WEIGHTS_FILE).is_file():
                raise ModelFileError(
                    f"no embedded default model is installed ({DEFAULT_MODEL_DIR} has no {WEIGHTS_FILE}); "
                    "pass --model PATH (a model folder or .safetensors file), or reinstall vqaudio"
                )
            path = DEFAULT_MODEL_DIR
        _refuse_hub_id(path)
        model_file = load_model_file(path, MODEL_FORMAT, expected_shapes=_release_shapes)
        where = str(model_file.path)
        config = _saved_config(model_file.meta, where)
        model = build_model(config.model)
        try:
            model.load_release_state_dict(model_file.state_dict)
        except RuntimeError as exc:
            first_line = str(exc).strip().splitlines()[0]
            raise ModelFileError(
                f"{where}: the weights do not match the saved config ({first_line}); re-export the model"
            ) from exc
        default_name = (
            model_file.path.parent.name if model_file.path.name == WEIGHTS_FILE else model_file.path.stem
        )
        tokenizer = cls(
            model.to(device=device, dtype=resolved),
            config,
            name=str(model_file.meta.get("name") or default_name),
            training=model_file.meta.get("training") or {},
        )
        tokenizer._hash = str(model_file.meta["weights_sha256"])
        tokenizer.path = model_file.path
        license_text = model_file.meta.get("license")
        tokenizer.license = str(license_text) if license_text else None
        return tokenizer

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
    ) -> Tokenizer:
        """``load``, by the name Hugging Face users look for, reading local files only.

        Args:
            path: a local folder with ``config.json`` + ``model.safetensors`` (what ``save`` writes, the layout of
                a Hugging Face model folder), a training run folder holding one, or a single ``.safetensors``
                file; None or ``"default"``: the embedded model (pass ``"./default"`` for a folder of that name).
                A Hub id (``"org/name"``) that is no local path raises ModelFileError: nothing is downloaded,
                fetch the folder first (e.g. ``huggingface-cli download org/name --local-dir DIR``).
            device, dtype: as in ``load``.
        """
        return cls.load(path, device=device, dtype=dtype)

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/model.safetensors`` and ``folder/config.json`` (atomically); returns the folder.

        The JSON holds ``{"format": "vqaudio-tokenizer", "name", "config", "training", "weights_sha256"}``
        (and versions, and ``license`` when known), and is also stored in the safetensors header, so the weights
        file alone loads too. A copy of the embedded model keeps its licence. Only float32 weights are saved
        (``to`` a lower precision is for running a model, not for releasing it).
        """
        if self.dtype != torch.float32:
            raise ValueError(
                f"save() writes float32 models, this tokenizer runs in {_dtype_name(self.dtype)}; save the "
                "float32 model it was loaded from, or call .to(dtype=torch.float32) first (the weights then keep "
                "the rounding of the lower precision)"
            )
        meta = {
            "format": MODEL_FORMAT,
            "name": self.name,
            **({"license": self.license} if self.license else {}),
            "config": to_dict(self.config),
            "training": self.training,
        }
        folder = save_model_file(folder, self.model.release_state_dict(), meta)
        self._hash = str(read_meta(folder)["weights_sha256"])
        self.path = folder / WEIGHTS_FILE
        return folder

    def to(
        self, device: str | torch.device | torch.dtype | None = None, dtype: torch.dtype | str | None = None
    ) -> Tokenizer:
        """Move the model to ``device`` and/or cast its weights to ``dtype``; returns self.

        ``tok.to(torch.bfloat16)`` casts only, as ``nn.Module.to`` does. bfloat16 and float16 apply to the
        network's weights and activations, codebooks included; the STFT, mel filterbank, pitch tracker and iSTFT
        run in float32 whatever the dtype, and audio comes out as float32. Codes then differ from float32's on a
        share of frames, mostly in the later codebooks: the embedded model keeps 68-74% of its codes in bfloat16
        and 95-97% in float16 (the pitch row all, the first codebook 93-97% / 99%), with the same mel distance
        to the input (+0.004 at most), on the example clips. On CPU both are for memory, not speed: torch's CPU
        kernels ran them about 12x slower than float32 here. ``hash`` stays the model file's.

        Args:
            device: where the model runs (None: where it is).
            dtype: torch.float32, torch.bfloat16 or torch.float16, or their names (None: unchanged).
        Raises:
            ValueError: another dtype, or one the device's kernels lack (e.g. float16 on an old torch's CPU).
        """
        if isinstance(device, torch.dtype):
            if dtype is not None:
                raise TypeError("to() got two dtypes; pass to(device, dtype) or to(dtype)")
            device, dtype = None, device
        target = self.device if device is None else torch.device(device)
        resolved = None if dtype is None else _resolve_dtype(dtype, target)
        self.model.to(device=device, dtype=resolved)
        return self

    # ----------------------------------------------------------------------------------------------
    # Facts
    # ----------------------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    @property
    def hop_length(self) -> int:
        """Samples per token frame."""
        return self.model.hop_length

    @property
    def frame_rate(self) -> float:
        """Token frames per second."""
        return self.model.frame_rate

    @property
    def num_codebooks(self) -> int:
        """Codes per frame at full bitrate (K)."""
        return self.model.num_codebooks

    @property
    def codebook_size(self) -> int:
        return self.model.codebook_size

    @property
    def pitch_rows(self) -> int:
        """1 when the codes carry a pitch row before the codebooks (``model.pitch.levels``), else 0.

        Codes are then ``[1 + n_q, F]``: row 0 is each frame's F0 and voicing, rows 1.. the codebooks. A
        reduced ``n_q`` keeps the pitch row: ``codes[: 1 + n_q]``.
        """
        return self.model.pitch_rows

    @property
    def bitrate(self) -> float:
        """Bits per second with all ``num_codebooks`` codebooks (and the pitch row, if any)."""
        return self.bitrate_at(self.num_codebooks)

    def bitrate_at(self, n_q: int) -> float:
        """Bits per second when only the first ``n_q`` codebooks are kept (residual VQ); the pitch row's bits
        are counted too."""
        self._check_n_q(n_q)
        return (n_q * math.log2(self.codebook_size) + self.config.model.pitch_bits) * self.frame_rate

    @property
    def first_codebook_hold(self) -> float:
        """The first codebook's hold margin that ``encode`` (and ``encode_batch``, ``encode_file``, ``stream``) use
        when their ``hold`` is None: the config's ``model.quantizer.first_codebook_hold`` unless set here.

        0: every frame's first code is its own (the nearest). Above 0 (a residual VQ): a frame keeps the previous
        frame's first code while the error of all codebooks with it is within (1 + hold) times the error with its
        own first code, and codebooks 2.. quantize what that leaves: longer runs of the first code, at a small
        cost in reconstruction (``ResidualVQ.held_first_codes``; docs/EXPERIMENTS.md, issue 26). Decoding is
        unchanged: held codes decode as any codes.
        """
        return self._first_codebook_hold

    @first_codebook_hold.setter
    def first_codebook_hold(self, hold: float) -> None:
        self._first_codebook_hold = self._check_hold(hold, "first_codebook_hold")

    @property
    def hash(self) -> str:
        """sha256 of the weights (the model file's ``weights_sha256``), as of load/save."""
        if self._hash is None:
            return weights_hash(clean_state_dict(self.model.release_state_dict()))
        return self._hash

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the network's weights (``load``/``to``); audio in and out is float32 whatever it is."""
        return self.model.weights_dtype

    @property
    def codebooks(self) -> Tensor:
        """[num_codebooks, codebook_size, latent_dim] the code vectors in the latent space the decoder reads.

        The quantized latent of a frame is the sum of its codes' vectors, ``codebooks[k, codes[P + k]]`` summed
        over k (P = ``pitch_rows``: the pitch row is no codebook; it enters the decoder through its own layer).
        For factorised codebooks (``codebook_dim`` < ``latent_dim``) these are the looked-up unit vectors
        projected out (``project_out``, bias included), not the small lookup vectors; for group VQ each
        group's vectors fill its own slice of the channels and are 0 elsewhere. A copy in the weights' dtype
        on the model's device, e.g. to initialise an LM's token embeddings.
        """
        return self.model.quantizer.latent_codebooks()

    @property
    def num_parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.model.parameters())

    def __repr__(self) -> str:
        return (
            f"Tokenizer(name={self.name!r}, sample_rate={self.sample_rate}, frame_rate={self.frame_rate:g}, "
            f"num_codebooks={self.num_codebooks}, codebook_size={self.codebook_size}, "
            f"pitch_rows={self.pitch_rows}, bitrate={self.bitrate / 1000:.2f} kbps)"
        )

    # ----------------------------------------------------------------------------------------------
    # Encode
    # ----------------------------------------------------------------------------------------------
    @overload
    def encode(
        self,
        wav: AudioLike,
        sample_rate: int,
        n_q: int | None = None,
        chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
        *,
        padding_mask: None = None,
        downmix: str | None = None,
        hold: float | None = None,
    ) -> Tensor: ...

    @overload
    def encode(
        self,
        wav: AudioLike,
        sample_rate: int,
        n_q: int | None = None,
        chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
        *,
        padding_mask: MaskLike,
        downmix: str | None = None,
        hold: float | None = None,
    ) -> TokenBatch: ...

    @torch.inference_mode()
    def encode(
        self,
        wav: AudioLike,
        sample_rate: int,
        n_q: int | None = None,
        chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
        *,
        padding_mask: MaskLike | None = None,
        downmix: str | None = None,
        hold: float | None = None,
    ) -> Tensor | TokenBatch:
        """Audio -> codes.

        Args:
            wav: float audio, numpy or torch: mono [T]; a batch [B, T] (a 2-D array is always a batch: a
                [C, T] multi-channel clip would be taken as C clips, so pass it as [1, C, T] with ``downmix``);
                or [B, C, T] (Hugging Face's ``input_values`` layout), where C = 1 is mono and C > 1 needs
                ``downmix``. Without ``padding_mask`` the rows of a batch are whole clips of equal length.
            sample_rate: the rate of ``wav``, always given (also as ``sample_rate=``; for audio already at the
                model's rate pass ``tok.sample_rate``); other rates are resampled (soxr), item by item.
            n_q: codebooks to keep (residual VQ: the first n_q); None: all.
            chunk_seconds: inputs longer than this are encoded in overlapping windows (bounded memory,
                same codes as encoding at once).
            padding_mask: [B, T] sample mask of a right-padded batch (Hugging Face's convention: 1 or True on
                real samples, then 0 or False on padding), bool, integer or float 0/1; each row needs a real
                sample. Item i is ``wav[i, ..., :padding_mask[i].sum()]``; whatever the padding holds is ignored.
            downmix: how [B, C, T] input with C > 1 becomes mono: ``"mean"`` averages the channels. None
                (default): such input is an error.
            hold: the first codebook's hold margin (see ``first_codebook_hold``, the default when None); 0: every
                code is the nearest. Held codes run over each input in order, windows or not.
        Returns:
            without ``padding_mask``: int64 codes on the model's device, [P + n_q, F] for [T] input or
            [B, P + n_q, F] for a batch (P = ``pitch_rows``: the pitch row first), F = ceil(T' / hop_length)
            where T' is the length at ``self.sample_rate``.
            with ``padding_mask``: a TokenBatch: codes [B, P + n_q, F_max] padded with ``PAD_CODE`` (-1) to the
            longest item (F_max = its frames, not the padded input's), ``padding_mask`` [B, F_max] frame mask,
            ``lengths`` frames and ``num_samples`` at the model's rate of each item. Each item's codes equal
            ``encode`` of that item alone.
        """
        hold = self._resolve_hold(hold, "encode")
        rows, batched = self._audio_rows(wav, sample_rate, "encode", downmix, padding_mask)
        codes = self._encode_rows(rows, n_q, chunk_seconds, hold)
        if padding_mask is not None:
            return self._pad_codes(codes, rows)
        stacked = torch.stack(codes)  # equal lengths in, equal lengths out: [B, n_q, F]
        return stacked if batched else stacked[0]

    @torch.inference_mode()
    def encode_batch(
        self,
        wavs: Sequence[AudioLike],
        sample_rate: int,
        n_q: int | None = None,
        chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
        *,
        hold: float | None = None,
    ) -> TokenBatch:
        """Audio of unequal lengths -> padded codes; each item's codes equal ``encode`` of it alone.

        Args:
            wavs: B mono [T_i] waveforms (numpy or torch) at ``sample_rate``.
            sample_rate, n_q, chunk_seconds, hold: as in ``encode``.
        Returns:
            TokenBatch(codes [B, P + n_q, F_max] padded with ``PAD_CODE``, lengths [B] frames, num_samples [B] at
            ``self.sample_rate``); ``padding_mask`` gives the frame mask.
        """
        hold = self._resolve_hold(hold, "encode_batch")
        if isinstance(wavs, (Tensor, np.ndarray)) and wavs.ndim == 1:
            raise ValueError(
                "encode_batch() expects a sequence of waveforms; for a single [T] waveform use encode()"
            )
        rows: list[Tensor] = []
        for index, wav in enumerate(wavs):
            item, batched = self._audio_rows(wav, sample_rate, f"encode_batch() item {index}")
            if batched:
                raise ValueError(
                    f"encode_batch() expects each item to be mono [T], item {index} has shape "
                    f"{tuple(np.shape(wav))}; pass a list of 1-D waveforms"
                )
            rows.extend(item)
        if not rows:
            raise ValueError("encode_batch() got no waveforms; pass a non-empty list")
        return self._pad_codes(self._encode_rows(rows, n_q, chunk_seconds, hold), rows)

    @staticmethod
    def _pad_codes(codes: list[Tensor], rows: list[Tensor]) -> TokenBatch:
        """Per-item codes [P + n_q, F_i] of the audio ``rows`` -> a TokenBatch padded with ``PAD_CODE``."""
        lengths = [item_codes.shape[-1] for item_codes in codes]
        padded = torch.full(
            (len(codes), codes[0].shape[0], max(lengths)), PAD_CODE, dtype=torch.long, device=codes[0].device
        )
        for index, item_codes in enumerate(codes):
            padded[index, :, : item_codes.shape[-1]] = item_codes
        return TokenBatch(
            padded,
            torch.tensor(lengths, dtype=torch.long),
            torch.tensor([row.shape[-1] for row in rows], dtype=torch.long),
        )

    def _encode_rows(
        self, rows: list[Tensor], n_q: int | None, chunk_seconds: float, hold: float
    ) -> list[Tensor]:
        """Mono [T_i] rows at the model rate -> [P + n_q, F_i] codes, as one ``model.encode`` call each."""
        self._check_n_q(n_q)
        num_frames = [self.model.num_frames(row.shape[-1]) for row in rows]
        context, core = self._context_frames(), self._chunk_frames(chunk_seconds)

        def windowed(step: Callable[[Tensor], Tensor]) -> list[Tensor]:
            """``step`` [B, W * hop] -> [B, ..., W] applied to every row, in windows."""
            return frame_map(
                rows, num_frames, step, in_unit=self.hop_length, out_unit=1, context=context, core=core
            )

        if hold == 0:  # frame-local: quantized window by window
            return windowed(lambda batch: self.model.encode(batch, n_q))  # [B, W * hop] -> [B, P + n_q, W]
        # Held codes depend on every earlier frame of the input, so a window cannot be quantized on its own: the
        # encoder (and pitch tracker) run in windows, the quantizer over each whole input, in frame order.
        latents = windowed(self.model.encode_latent)  # [D, F_i] each
        codes = [self.model.quantize_latent(latent[None], n_q, hold)[0] for latent in latents]
        if not self.pitch_rows:
            return codes
        pitch = windowed(self.model.encode_pitch)  # [F_i] each
        return [torch.cat([row[None], item]) for row, item in zip(pitch, codes, strict=True)]

    @torch.inference_mode()
    def encode_file(
        self,
        path: str | Path,
        n_q: int | None = None,
        chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
        block_frames: int | None = None,
        *,
        hold: float | None = None,
    ) -> EncodedFile:
        """An audio file -> codes, read from disk window by window: memory is bounded by one window (and the
        codes, 2 bytes per code), whatever the file's length.

        The codes equal ``encode(load_audio(path, self.sample_rate), self.sample_rate, n_q, chunk_seconds)``
        exactly: the same samples (soxr's streaming resampler equals its one-shot one) go through the same
        windows. Held codes (``hold`` > 0) carry the first codebook's last code from window to window.

        Args:
            path: any format libsndfile reads; other rates are resampled, multi-channel audio averaged.
            n_q, chunk_seconds, hold: as in ``encode``.
            block_frames: frames read from the file at a time (None: ``AudioReader``'s default).
        Returns:
            EncodedFile(codes [P + n_q, F] in the token file's storage dtype, num_samples at the model's rate).
        Raises:
            AudioError: unreadable, empty or non-finite audio, naming the file.
        """
        self._check_n_q(n_q)
        hold = self._resolve_hold(hold, "encode_file")
        core = self._chunk_frames(chunk_seconds)
        options = {} if block_frames is None else {"block_frames": block_frames}
        rows = self.pitch_rows + (self.num_codebooks if n_q is None else n_q)
        with AudioReader(path, self.sample_rate, **options) as reader:
            # frames x rows, the token file's layout, so TokenFileWriter.add copies nothing more; sized from
            # the header, grown if the file holds more than it says
            codes = np.empty(
                (self.model.num_frames(reader.header_samples), rows), storage_dtype(self.codebook_size)
            )
            filled = 0
            for piece in self._encode_reader(reader, n_q, core, hold):  # [rows, frames]
                if filled + piece.shape[-1] > len(codes):
                    codes = np.concatenate(
                        [codes, np.empty_like(codes, shape=(len(codes) // 2 + piece.shape[-1], rows))]
                    )
                codes[filled : filled + piece.shape[-1]] = piece.T.cpu().numpy()
                filled += piece.shape[-1]
            assert reader.num_samples is not None  # every window read, so the end was reached
            return EncodedFile(codes[:filled].T, reader.num_samples)

    def _encode_reader(
        self, reader: AudioReader, n_q: int | None, core: int, hold: float
    ) -> Iterator[Tensor]:
        """Codes of consecutive frames, window by window, from the windows ``frame_map`` would use.

        The input's length is learnt when the reader reaches the end of the file, which it always does before
        the windows near the end are placed: a window is read as far as its end before it is placed.
        """
        hop, context = self.hop_length, self._context_frames()
        window = core + 2 * context
        previous: Tensor | None = None  # held codes: the first codebook's code of the last frame yielded

        def codes_of(start: int, frames: int, keep_start: int, keep_stop: int) -> Tensor:
            """Codes of input frames [keep_start, keep_stop) from input frames [start, start + frames),
            zero-padded past the end as frame_map pads."""
            nonlocal previous
            wav = torch.from_numpy(reader.read(start * hop, (start + frames) * hop))
            wav = F.pad(wav, (0, frames * hop - wav.shape[-1]))[None].to(self.device)
            kept = slice(keep_start - start, keep_stop - start)
            if hold == 0:
                return self.model.encode(wav, n_q)[0][:, kept]  # [P + n_q, kept frames]
            codes = self.model.quantize_latent(self.model.encode_latent(wav)[..., kept], n_q, hold, previous)
            previous = codes[:, 0, -1]
            if self.pitch_rows:
                codes = torch.cat([self.model.encode_pitch(wav)[:, None, kept], codes], dim=1)
            return codes[0]

        reader.read(0, window * hop + 1)
        if reader.num_samples is not None:  # a short input: one pass, as frame_map does
            num_frames = self.model.num_frames(reader.num_samples)
            yield codes_of(0, num_frames, 0, num_frames)
            return
        keep_start = 0
        while reader.num_samples is None or keep_start < self.model.num_frames(reader.num_samples):
            start = max(0, keep_start - context)
            reader.read(start * hop, (start + window) * hop)
            keep_stop = keep_start + core
            if reader.num_samples is not None:  # the end is in reach: the last window ends at the input's end
                num_frames = self.model.num_frames(reader.num_samples)
                start = min(start, num_frames - window)
                keep_stop = min(keep_stop, num_frames)
            yield codes_of(start, window, keep_start, keep_stop)
            # the next window starts at or after keep_stop - window (its start is shifted back at most that far)
            reader.discard((keep_stop - window) * hop)
            keep_start = keep_stop

    # ----------------------------------------------------------------------------------------------
    # Decode
    # ----------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def decode(
        self,
        codes: CodesLike,
        n_q: int | None = None,
        num_samples: int | Sequence[int] | Tensor | None = None,
        chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
        *,
        padding_mask: MaskLike | None = None,
    ) -> Tensor:
        """Codes -> audio at ``self.sample_rate``.

        Args:
            codes: integer codes, numpy or torch, [P + K', F] or a batch [B, P + K', F] (P = ``pitch_rows``);
                K' <= num_codebooks (residual VQ: the first K' codebooks give a coarser reconstruction).
            n_q: decode only the first n_q codebooks of ``codes`` (and the pitch row); None: all rows.
            num_samples: crop the audio to this many samples (e.g. the original length); None:
                F * hop_length. With ``padding_mask``: None or one length per item ([B], e.g. a TokenBatch's
                ``num_samples``).
            chunk_seconds: token sequences longer than this are decoded in overlapping windows.
            padding_mask: [B, F] frame mask of a padded batch [B, P + K', F] (a TokenBatch's ``padding_mask``:
                1 on real frames, then 0; bool, integer or float 0/1). Item i is decoded from its first
                ``padding_mask[i].sum()`` frames alone; what the padded frames hold (``PAD_CODE``) is ignored.
        Returns:
            float32 audio on the model's device, [T] for [K', F] codes or [B, T] for [B, K', F]. With
            ``padding_mask``: [B, F * hop_length], or [B, max(num_samples)], each item's audio followed by zeros.
        """
        if isinstance(n_q, (Tensor, np.ndarray)):
            raise TypeError(
                "decode()'s second argument is n_q (an int); pass a mask as padding_mask=mask, e.g. "
                "decode(batch.codes, padding_mask=batch.padding_mask)"
            )
        if padding_mask is not None:
            return self._decode_masked(codes, padding_mask, n_q, num_samples, chunk_seconds)
        if num_samples is not None and not isinstance(num_samples, (int, np.integer)):
            raise TypeError(
                f"decode() num_samples must be an int without padding_mask, got {type(num_samples).__name__}; "
                "for one length per item pass padding_mask too, or use decode_batch()"
            )
        tensor, batched = self._codes_tensor(codes, "decode")
        tensor = self._select_codebooks(tensor, n_q, "decode")
        max_samples = tensor.shape[-1] * self.hop_length
        if num_samples is not None and not 1 <= num_samples <= max_samples:
            raise InputError(
                f"decode() num_samples must be between 1 and F * hop_length = {max_samples}, "
                f"got {num_samples}"
            )
        audio = torch.stack(self._decode_rows(list(tensor), chunk_seconds))  # [B, F * hop]
        if num_samples is not None:
            audio = audio[:, :num_samples]
        return audio if batched else audio[0]

    def _decode_masked(
        self,
        codes: CodesLike,
        padding_mask: MaskLike,
        n_q: int | None,
        num_samples: int | Sequence[int] | Tensor | None,
        chunk_seconds: float,
    ) -> Tensor:
        """``decode`` of a padded batch: each item alone, then zero-padded to one length."""
        if np.ndim(codes) != 3:
            raise ValueError(
                f"decode() with padding_mask expects a batch of codes [B, K, F], got shape {tuple(np.shape(codes))}"
            )
        batch_size, num_frames = np.shape(codes)[0], np.shape(codes)[-1]
        lengths = _mask_lengths(padding_mask, (batch_size, num_frames), "decode", "frames")
        items = []
        for index, length in enumerate(lengths):
            item, _ = self._codes_tensor(codes[index, :, :length], f"decode() item {index}")
            items.append(self._select_codebooks(item, n_q, "decode")[0])
        if num_samples is None:
            crops = [length * self.hop_length for length in lengths]
            total = num_frames * self.hop_length
        else:
            if isinstance(num_samples, (int, np.integer)) or np.ndim(num_samples) != 1:
                raise TypeError(
                    f"decode() with padding_mask takes num_samples as one length per item ([B]), got {num_samples!r}"
                )
            crops = [int(value) for value in num_samples]
            if len(crops) != batch_size:
                raise ValueError(f"decode() got {batch_size} items but {len(crops)} num_samples")
            for index, (crop, length) in enumerate(zip(crops, lengths, strict=True)):
                if not 1 <= crop <= length * self.hop_length:
                    raise ValueError(
                        f"decode() num_samples[{index}] must be between 1 and the item's frames * hop_length = "
                        f"{length * self.hop_length}, got {crop}"
                    )
            total = max(crops)
        audio = torch.zeros(batch_size, total, device=self.device)
        for index, (wav, crop) in enumerate(zip(self._decode_rows(items, chunk_seconds), crops, strict=True)):
            audio[index, :crop] = wav[:crop]
        return audio

    @torch.inference_mode()
    def decode_batch(
        self,
        codes: TokenBatch | Sequence[CodesLike],
        n_q: int | None = None,
        num_samples: Sequence[int] | None = None,
        chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    ) -> list[Tensor]:
        """Codes of unequal lengths -> one waveform each; each equals ``decode`` of that item alone.

        Args:
            codes: a TokenBatch (its lengths and num_samples are used) or a sequence of [K', F_i] codes.
            n_q: decode only the first n_q codebooks.
            num_samples: [B] crop lengths (defaults to the TokenBatch's, or F_i * hop_length).
            chunk_seconds: as in ``decode``.
        Returns:
            B float32 waveforms [T_i].
        """
        items: list[Tensor] = []
        if isinstance(codes, TokenBatch):
            for index, length in enumerate(codes.lengths.tolist()):
                tensor, _ = self._codes_tensor(codes.codes[index, :, :length], f"decode_batch() item {index}")
                items.append(tensor[0])
            if num_samples is None:
                num_samples = codes.num_samples.tolist()
        else:
            for index, item in enumerate(codes):
                tensor, batched = self._codes_tensor(item, f"decode_batch() item {index}")
                if batched:
                    raise ValueError(
                        f"decode_batch() expects each item as [K, F], item {index} has shape "
                        f"{tuple(np.shape(item))}"
                    )
                items.append(tensor[0])
        if not items:
            raise ValueError("decode_batch() got no codes; pass a non-empty list")
        if len({item.shape[0] for item in items}) > 1:
            raise ValueError(
                f"decode_batch() items have different numbers of codebooks "
                f"{sorted({item.shape[0] for item in items})}; pass n_q to decode the same number for all"
            )
        items = [self._select_codebooks(item[None], n_q, "decode_batch")[0] for item in items]
        if num_samples is not None and len(num_samples) != len(items):
            raise ValueError(f"decode_batch() got {len(items)} items but {len(num_samples)} num_samples")
        audio = self._decode_rows(items, chunk_seconds)
        if num_samples is None:
            return audio
        result = []
        for index, (wav, length) in enumerate(zip(audio, num_samples, strict=True)):
            if not 1 <= int(length) <= wav.shape[-1]:
                raise ValueError(
                    f"decode_batch() num_samples[{index}] must be between 1 and {wav.shape[-1]}, got {length}"
                )
            result.append(wav[: int(length)])
        return result

    def _decode_rows(self, rows: list[Tensor], chunk_seconds: float) -> list[Tensor]:
        """[K', F_i] codes -> [F_i * hop] audio, exactly as one ``model.decode`` call each."""
        core = self._chunk_frames(chunk_seconds)
        num_frames = [row.shape[-1] for row in rows]
        if not self.model.integrates_phase:
            return frame_map(
                rows,
                num_frames,
                self.model.decode,  # [B, K', P] -> [B, P * hop]
                in_unit=1,
                out_unit=self.hop_length,
                context=self._context_frames(),
                core=core,
            )
        head = self.model.decoder.head
        assert isinstance(head, ISTFTHead)
        upsampling = self.model.head_frames_per_frame
        predictions = frame_map(
            rows,
            num_frames,
            self.model.decode_spectrum,  # [B, K', P] -> [B, 2 * bins, P * upsampling]
            in_unit=1,
            out_unit=upsampling,
            context=self._context_frames(),
            core=core,
        )
        spectra = [head.resolve_phase(prediction[None])[0] for prediction in predictions]  # whole inputs
        return frame_map(
            spectra,
            [frames * upsampling for frames in num_frames],
            head.overlap_add,  # [B, 2 * bins, P] -> [B, P * istft_hop]
            in_unit=1,
            out_unit=head.hop_length,
            context=head.context_frames,
            core=core * upsampling,
        )

    @torch.inference_mode()
    def decode_stream(
        self,
        codes: CodesLike,
        n_q: int | None = None,
        num_samples: int | None = None,
        chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    ) -> Iterator[Tensor]:
        """Codes -> consecutive pieces of audio, one window at a time (for ``save_audio_blocks``).

        The pieces, concatenated, equal ``decode(codes, n_q, num_samples, chunk_seconds)``: exactly for a
        frame-local decoder (the same windows); for one that integrates phase over frames (``integrates_phase``)
        the running phase is carried from window to window instead of summed over the whole input: the same
        sums in the same order, equal up to float rounding (the F0 of a harmonic excitation, computed on pieces
        of another length, can differ in its last bits, and a harmonic comb amplifies that near its peaks).
        Only a window of codes (converted from ``codes``, which may be a memory-mapped token file), spectra
        and audio is held.

        Args:
            codes: [P + K', F] integer codes (no batch), numpy (e.g. a ``TokenCorpus`` row) or torch.
            n_q, num_samples, chunk_seconds: as in ``decode``.
        Returns:
            an iterator of float32 [T_i] pieces on the model's device, ``num_samples`` (or F * hop_length) in
            all.
        """
        if np.ndim(codes) != 2:
            raise ValueError(f"decode_stream() expects codes [K, F], got shape {tuple(np.shape(codes))}")
        num_frames = np.shape(codes)[-1]
        self._select_codebooks(self._codes_tensor(codes[:, :1], "decode_stream")[0], n_q, "decode_stream")
        max_samples = num_frames * self.hop_length
        if num_samples is not None and not 1 <= num_samples <= max_samples:
            raise InputError(
                f"decode_stream() num_samples must be between 1 and F * hop_length = {max_samples}, "
                f"got {num_samples}"
            )
        self._chunk_frames(chunk_seconds)  # validated before the first piece is asked for
        return self._decode_pieces(
            codes, n_q, max_samples if num_samples is None else num_samples, chunk_seconds
        )

    @torch.inference_mode()
    def _decode_pieces(
        self, codes: CodesLike, n_q: int | None, num_samples: int, chunk_seconds: float
    ) -> Iterator[Tensor]:
        """``_decode_rows`` of one input, as ``stream_windows`` stages: codes read a chunk at a time, audio
        yielded as it is made (for a phase-integrating head: spectra, their running phase carried from piece
        to piece, then overlap-add)."""
        core, context = self._chunk_frames(chunk_seconds), self._context_frames()
        num_frames = np.shape(codes)[-1]

        def code_pieces() -> Iterator[Tensor]:
            for start in range(0, num_frames, core):
                tensor = self._codes_tensor(codes[:, start : start + core], "decode_stream")[0]
                yield self._select_codebooks(tensor, n_q, "decode_stream")[0]  # [P + n_q, frames]

        def decode(step: Callable[[Tensor], Tensor], out_unit: int) -> Iterator[Tensor]:
            return stream_windows(code_pieces(), num_frames, step, 1, out_unit, context, core)

        if not self.model.integrates_phase:
            audio = decode(self.model.decode, self.hop_length)  # [1, K', P] -> [1, P * hop]
        else:
            head = self.model.decoder.head
            assert isinstance(head, ISTFTHead)
            upsampling = self.model.head_frames_per_frame

            def spectra() -> Iterator[Tensor]:
                state = None
                for prediction in decode(self.model.decode_spectrum, upsampling):  # [C, frames]
                    spectrum, state = head.resolve_phase_from(prediction[None], state)
                    yield spectrum[0]

            audio = stream_windows(
                spectra(),
                num_frames * upsampling,
                head.overlap_add,  # [1, 2 * bins, P] -> [1, P * istft_hop]
                1,
                head.hop_length,
                head.context_frames,
                core * upsampling,
            )
        done = 0
        for piece in audio:
            if done < num_samples:
                yield piece[: num_samples - done]
            done += piece.shape[-1]

    # ----------------------------------------------------------------------------------------------
    # Streaming
    # ----------------------------------------------------------------------------------------------
    @overload
    def stream(
        self,
        kind: Literal["encode"] = "encode",
        n_q: int | None = None,
        sample_rate: int | None = None,
        *,
        hold: float | None = None,
    ) -> StreamingEncoder: ...

    @overload
    def stream(
        self,
        kind: Literal["decode"],
        n_q: int | None = None,
        sample_rate: int | None = None,
        *,
        hold: float | None = None,
    ) -> StreamingDecoder: ...

    def stream(
        self,
        kind: str = "encode",
        n_q: int | None = None,
        sample_rate: int | None = None,
        *,
        hold: float | None = None,
    ) -> StreamingEncoder | StreamingDecoder:
        """A streaming encoder (audio chunks -> codes) or decoder (codes chunks -> audio) of a causal model.

            enc = tok.stream("encode")                # push(chunk [T]) -> codes [P + n_q, n] ready so far
            codes = [enc.push(chunk) for chunk in chunks] + [enc.flush()]
            dec = tok.stream("decode")                # push(codes [P + K', n]) -> audio [T] ready so far
            audio = [dec.push(c) for c in codes] + [dec.flush()]

        Chunks may have any length (20-80 ms is typical); concatenated, the outputs equal ``encode`` of the whole
        audio and ``decode`` of all the codes (``vqaudio.codec.streaming``: what is exact and the latency). Each
        object holds its own typed state (``.state``, ``.reset()``); ``.latency`` is the algorithmic latency.

        Args:
            kind: ``"encode"`` or ``"decode"``.
            n_q: codebooks to emit (encode) or to decode of each chunk (decode); None: all.
            sample_rate: the rate of the audio pushed, checked to be the model's (streaming does not resample).
            hold: encode only: the first codebook's hold margin (see ``first_codebook_hold``, the default when
                None); the stream carries the last frame's first code from push to push, so its codes still equal
                ``encode``'s.
        Raises:
            InputError: the model is not causal (``model.causal``: its frames read later audio), or a bad value.
        """
        from vqaudio.codec.streaming import StreamingDecoder, StreamingEncoder, check_streamable

        if kind not in ("encode", "decode"):
            raise InputError(f"stream() kind must be 'encode' or 'decode', got {kind!r}")
        self._check_n_q(n_q)
        if sample_rate is not None and sample_rate != self.sample_rate:
            raise InputError(
                f"stream() takes audio at the model's {self.sample_rate} Hz, got sample_rate={sample_rate}; "
                f"resample first (e.g. soxr.ResampleStream({sample_rate}, {self.sample_rate}, 1))"
            )
        if kind == "decode":
            if hold is not None:
                raise InputError("stream('decode') takes no hold: held codes decode as any codes; drop hold=")
            check_streamable(self.model, f"model {self.name!r}")
            return StreamingDecoder(self.model, n_q)
        hold = self._resolve_hold(hold, "stream")
        check_streamable(self.model, f"model {self.name!r}")
        return StreamingEncoder(self.model, n_q, hold=hold)

    # ----------------------------------------------------------------------------------------------
    # Input checks
    # ----------------------------------------------------------------------------------------------
    def _check_n_q(self, n_q: int | None) -> None:
        if n_q is None:
            return
        if (
            isinstance(n_q, bool)
            or not isinstance(n_q, (int, np.integer))
            or not 1 <= n_q <= self.num_codebooks
        ):
            raise InputError(
                f"n_q must be an integer between 1 and num_codebooks={self.num_codebooks}, got {n_q!r}"
            )

    def _resolve_hold(self, hold: float | None, caller: str) -> float:
        """``hold`` checked, or ``first_codebook_hold`` when None."""
        return self._first_codebook_hold if hold is None else self._check_hold(hold, f"{caller}() hold")

    def _check_hold(self, hold: float, name: str) -> float:
        """A hold margin this model can use, as a float; InputError otherwise."""
        self.model.check_hold(hold, name)
        return float(hold)

    def _context_frames(self) -> int:
        """The receptive field (samples, each side) rounded up to whole frames."""
        return -(-self.model.receptive_field // self.hop_length)

    def _chunk_frames(self, chunk_seconds: float) -> int:
        if (
            isinstance(chunk_seconds, bool)
            or not isinstance(chunk_seconds, (int, float))
            or not chunk_seconds > 0
        ):
            raise InputError(f"chunk_seconds must be a positive number of seconds, got {chunk_seconds!r}")
        check_value("chunk_seconds", chunk_seconds, CHUNK_SECONDS)
        return max(1, round(chunk_seconds * self.frame_rate))

    def _audio_rows(
        self,
        wav: AudioLike,
        sample_rate: int,
        caller: str,
        downmix: str | None = None,
        padding_mask: MaskLike | None = None,
    ) -> tuple[list[Tensor], bool]:
        """Validate and convert to float32 mono rows [T_i] at the model rate on the model's device: the rows of a
        batch [B, T] or [B, C, T] (channels averaged with ``downmix``), cut to ``padding_mask``'s lengths."""
        if isinstance(sample_rate, (Tensor, np.ndarray)):
            raise TypeError(
                f"{caller}()'s second argument is the sample rate (an int); pass a mask as padding_mask=mask, "
                f"e.g. {caller}(input_values, {self.sample_rate}, padding_mask=mask)"
            )
        if (
            isinstance(sample_rate, bool)
            or not isinstance(sample_rate, (int, np.integer))
            or sample_rate <= 0
        ):
            raise ValueError(
                f"{caller}() needs the sample rate of the audio as a positive integer, got {sample_rate!r}"
            )
        if downmix is not None and downmix not in DOWNMIX:
            raise ValueError(f"{caller}() downmix must be None or one of {DOWNMIX}, got {downmix!r}")
        if isinstance(wav, Tensor):
            is_float = wav.is_floating_point()
        elif isinstance(wav, np.ndarray):
            is_float = np.issubdtype(wav.dtype, np.floating)
        else:
            raise TypeError(f"{caller}() expects a numpy array or torch.Tensor, got {type(wav).__name__}")
        if not is_float:
            raise TypeError(
                f"{caller}() expects float audio in [-1, 1], got {wav.dtype}; for int16 PCM pass wav / 32768"
            )
        shape = tuple(wav.shape)
        if len(shape) == 2 and shape[1] <= 16 and shape[0] > shape[1]:
            raise ValueError(
                f"{caller}() expects mono audio [T] or a batch [B, T], got shape {shape}, which looks like "
                "[T, channels]; downmix first, e.g. wav.mean(axis=1)"
            )
        if len(shape) not in (1, 2, 3):
            raise ValueError(
                f"{caller}() expects mono audio [T], a batch [B, T] or [B, C, T], got shape {shape}; "
                "downmix multi-channel audio and pass one waveform per row"
            )
        if len(shape) == 3 and shape[2] <= 16 and shape[1] > shape[2]:
            raise ValueError(
                f"{caller}() expects [B, C, T] (channels before time), got shape {shape}, which looks like "
                "[B, T, channels]; pass wav.transpose(1, 2)"
            )
        if len(shape) == 2 and downmix is not None:
            raise ValueError(
                f"{caller}() got downmix={downmix!r} with 2-D input {shape}, which is a batch [B, T] of mono "
                "clips, not channels; pass one multi-channel clip [C, T] as wav[None] ([1, C, T])"
            )
        if isinstance(wav, Tensor) and wav.dtype not in (torch.float32, torch.float64):
            wav = wav.float()  # half-precision input (numpy, the resampler, have no bfloat16)
        if len(shape) == 3:
            if shape[1] > 1 and downmix is None:
                raise ValueError(
                    f"{caller}() got [B, C, T] = {shape}, {shape[1]} channels; pass downmix='mean' to average "
                    "them, or pick one channel (wav[:, 0])"
                )
            wav = wav[:, 0] if shape[1] == 1 else wav.mean(1)  # [B, T]
        batched = len(shape) > 1
        rows_in = list(wav) if batched else [wav]
        if not rows_in:
            raise ValueError(f"{caller}() got an empty batch, shape {shape}")
        if padding_mask is not None:
            if not batched:
                raise ValueError(
                    f"{caller}() with padding_mask expects a batch [B, T] or [B, C, T], got shape {shape}; "
                    "a single clip needs no mask"
                )
            lengths = _mask_lengths(padding_mask, (shape[0], shape[-1]), caller, "samples")
            rows_in = [row[:length] for row, length in zip(rows_in, lengths, strict=True)]
        rows = []
        for index, row in enumerate(rows_in):
            name = f"{caller}() input" + (f" row {index}" if batched else "")
            if sample_rate != self.sample_rate:
                tensor = to_model_input(row, int(sample_rate), self.sample_rate, name)
            else:
                tensor = torch.as_tensor(row).to(torch.float32)
                if tensor.numel() == 0:
                    raise AudioError(f"{name}: audio is empty (0 samples)")
                if not bool(torch.isfinite(tensor).all()):
                    raise AudioError(f"{name}: audio holds NaN or Inf samples")
            rows.append(tensor.to(self.device))
        return rows, batched

    def _codes_tensor(self, codes: CodesLike, caller: str) -> tuple[Tensor, bool]:
        """Validate codes -> int64 [B, K', F] on the model's device, and whether the input was batched."""
        if isinstance(codes, np.ndarray):
            if not np.issubdtype(codes.dtype, np.integer):
                raise TypeError(f"{caller}() expects integer codes, got {codes.dtype}")
            tensor = torch.from_numpy(np.ascontiguousarray(codes).astype(np.int64, copy=False))
        elif isinstance(codes, Tensor):
            if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
                raise TypeError(f"{caller}() expects integer codes, got {codes.dtype}")
            tensor = codes.long()
        else:
            raise TypeError(
                f"{caller}() expects codes as a numpy array or torch.Tensor, got {type(codes).__name__}"
            )
        if tensor.dim() not in (2, 3):
            raise ValueError(f"{caller}() expects codes [K, F] or [B, K, F], got shape {tuple(tensor.shape)}")
        batched = tensor.dim() == 3
        tensor = tensor if batched else tensor[None]
        if bool((tensor == PAD_CODE).any()):
            raise ValueError(
                f"{caller}() got PAD codes ({PAD_CODE}: the padded frames of a TokenBatch); decode a padded batch "
                "with its mask, decode(batch.codes, padding_mask=batch.padding_mask), or decode_batch(batch)"
            )
        rows = (self.pitch_rows + 1, self.pitch_rows + self.num_codebooks)
        if not rows[0] <= tensor.shape[1] <= rows[1]:
            what = "rows (a pitch row, then the codebooks)" if self.pitch_rows else "codebooks"
            raise ValueError(
                f"{caller}() expects codes with {rows[0]}..{rows[1]} {what} for model {self.name!r}, got "
                f"shape {tuple(codes.shape)}; were they made by another model?"
            )
        tensor = self.model.validate_codes(tensor, f"{caller}()")
        return tensor.to(self.device), batched

    def _select_codebooks(self, codes: Tensor, n_q: int | None, caller: str) -> Tensor:
        if n_q is None:
            return codes
        self._check_n_q(n_q)
        held = codes.shape[1] - self.pitch_rows
        if n_q > held:
            raise InputError(f"{caller}() n_q={n_q} but the codes hold only {held} codebooks")
        return codes[:, : self.pitch_rows + n_q]


def _mask_lengths(mask: MaskLike, shape: tuple[int, int], caller: str, unit: str) -> list[int]:
    """A right-padding mask [B, L] (1 on each row's first ``length`` positions, then 0) -> the B lengths.

    Args:
        mask: bool, integer or float 0/1, numpy or torch, on any device.
        shape: (B, L) the mask must have.
        unit: what a position is ("samples", "frames"), for the messages.
    """
    if not isinstance(mask, (Tensor, np.ndarray)):
        raise TypeError(
            f"{caller}() padding_mask must be a numpy array or torch.Tensor, got {type(mask).__name__}"
        )
    values = torch.as_tensor(mask.detach().cpu() if isinstance(mask, Tensor) else mask)
    if values.is_complex():
        raise TypeError(f"{caller}() padding_mask must be bool or 0/1 numbers, got {values.dtype}")
    if tuple(values.shape) != shape:
        raise ValueError(
            f"{caller}() padding_mask must have shape [B, {unit}] = {shape}, got {tuple(values.shape)}"
            + ("; pass the frame mask of the codes (TokenBatch.padding_mask)" if unit == "frames" else "")
        )
    real = values != 0
    if not bool(((values == 0) | (values == 1)).all()):
        raise ValueError(f"{caller}() padding_mask must hold only 0 and 1 (or False and True)")
    lengths = real.sum(dim=1)
    empty = (lengths == 0).nonzero()
    if len(empty):
        raise ValueError(f"{caller}() padding_mask row {int(empty[0])} has no real {unit}; drop empty items")
    positions = torch.arange(shape[1])[None, :]
    wrong = (real != (positions < lengths[:, None])).any(dim=1).nonzero()
    if len(wrong):
        raise ValueError(
            f"{caller}() padding_mask row {int(wrong[0])} is not 1s then 0s; vqaudio expects right-padded "
            "batches (Hugging Face's padding_side='right'): each item at the start of its row"
        )
    return [int(length) for length in lengths]


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _resolve_dtype(dtype: torch.dtype | str, device: torch.device) -> torch.dtype:
    """float32, bfloat16 or float16 (a torch.dtype or its name), checked to run on ``device``."""
    if isinstance(dtype, str):
        resolved = DTYPES.get(dtype.removeprefix("torch."))
    elif isinstance(dtype, torch.dtype):
        resolved = dtype if dtype in DTYPES.values() else None
    else:
        raise TypeError(f"dtype must be a torch.dtype or its name, got {type(dtype).__name__}")
    if resolved is None:
        raise ValueError(
            f"dtype must be one of {', '.join(DTYPES)} (torch.float32, ...), got {dtype!r}; the model is "
            "trained and saved in float32, bfloat16 and float16 run it at lower precision"
        )
    if resolved != torch.float32:
        # the network's convolutions must exist in this dtype here (CPU float16 kernels came in late torch
        # versions); a probe costs microseconds and turns a failure deep inside encode() into this message
        probe = torch.zeros(1, 1, 2, dtype=resolved, device=device)
        try:
            F.conv1d(probe, probe[..., :1])
        except RuntimeError as exc:
            first_line = str(exc).strip().splitlines()[0]
            raise ValueError(
                f"dtype={_dtype_name(resolved)} is not supported on {device} by torch {torch.__version__} "
                f"({first_line}); use bfloat16 on CPU, float16 on CUDA, or float32"
            ) from exc
    return resolved


_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


def _refuse_hub_id(path: str | Path) -> None:
    """One clear error for a Hugging Face Hub id (``org/name``) that is no local path: nothing is downloaded."""
    if isinstance(path, str) and _HUB_ID.fullmatch(path) and not Path(path).exists():
        raise ModelFileError(
            f"{path!r} is no local model folder or file, and looks like a Hugging Face Hub id: vqaudio never "
            f"downloads; fetch the folder first (e.g. huggingface-cli download {path} --local-dir DIR) and pass "
            "DIR, or pass None for the embedded model"
        )


def _saved_config(meta: dict[str, Any], where: str) -> Config:
    """The Config of a model description, checked (types, ranges, fit) before anything is built from it."""
    try:
        config = from_dict(Config, meta.get("config"), where=f"{where} config")
        config.model.validate()
    except ValueError as exc:  # ConfigError included
        raise ModelFileError(
            f"{where}: the saved config cannot be used ({exc}); was it written by another vqaudio version?"
        ) from exc
    return config


def _release_shapes(meta: dict[str, Any], weights: Path) -> ExpectedTensors:
    """The tensors (name -> shape) the description's config makes, from a model built on the meta device
    (no memory), to check against the weights file's header before the real model is built. Files of earlier
    versions may also hold the quantizers' training statistics."""
    config = _saved_config(meta, str(weights))
    with torch.device("meta"):
        model = build_model(config.model)
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    return ExpectedTensors(shapes, frozenset(shapes) - set(model.release_state_dict()))
