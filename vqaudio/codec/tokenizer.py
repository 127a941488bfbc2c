"""The Tokenizer: a trained VQ-VAE (van den Oord et al., 2017, https://arxiv.org/abs/1711.00937) as a
speech <-> token converter, with model files, resampling, batching and long-file chunking.

    tok = Tokenizer.load("exp/run1")          # a model folder or .safetensors file; None: the embedded model
    codes = tok.encode(wav, sample_rate)      # [T] -> [n_q, F];  [B, T] -> [B, n_q, F]
    wav = tok.decode(codes)                   # [n_q, F] -> [F * hop_length] at tok.sample_rate

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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from vqaudio.codec.istft import ISTFTHead
from vqaudio.codec.vqvae import VQVAE, build_model
from vqaudio.codec.windows import frame_map, stream_windows
from vqaudio.config import CHUNK_SECONDS, Config, check_value, from_dict, to_dict
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

MODEL_FORMAT = "vqaudio-tokenizer"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "pretrained" / "default"
DEFAULT_CHUNK_SECONDS = 30.0

AudioLike = Tensor | np.ndarray
CodesLike = Tensor | np.ndarray


class TokenBatch(NamedTuple):
    """Codes of inputs of unequal lengths, padded to the longest.

    codes: [B, n_q, F_max] int64; frames at and after ``lengths[i]`` are 0 (padding).
    lengths: [B] int64 frames of each input, ``ceil(num_samples / hop_length)``.
    num_samples: [B] int64 samples of each input at the model's sample rate (for ``decode`` to crop).
    """

    codes: Tensor
    lengths: Tensor
    num_samples: Tensor


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
        self._hash: str | None = None  # recorded at load/save; computed on demand otherwise

    # ----------------------------------------------------------------------------------------------
    # Files
    # ----------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None, device: str | torch.device = "cpu") -> Tokenizer:
        """Load a model written by ``save`` (or by ``vqaudio train``).

        Args:
            path: a model folder (``model.safetensors`` + ``config.json``), a training run folder holding one,
                or a single ``.safetensors`` file (its header holds the config). None: the model embedded in
                the package (``vqaudio/pretrained/default/``).
            device: where the model runs.
        Returns:
            the Tokenizer, in eval mode; its weights were loaded with ``strict=True`` and their hash checked.
        Raises:
            ModelFileError: missing, corrupt or modified files, or a config this version cannot read.
        """
        if path is None:
            if not (DEFAULT_MODEL_DIR / WEIGHTS_FILE).is_file():
                raise ModelFileError(
                    f"no embedded default model is installed ({DEFAULT_MODEL_DIR} has no {WEIGHTS_FILE}); "
                    "pass --model PATH (a model folder or .safetensors file), or reinstall vqaudio"
                )
            path = DEFAULT_MODEL_DIR
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
            model.to(device),
            config,
            name=str(model_file.meta.get("name") or default_name),
            training=model_file.meta.get("training") or {},
        )
        tokenizer._hash = str(model_file.meta["weights_sha256"])
        tokenizer.path = model_file.path
        return tokenizer

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/model.safetensors`` and ``folder/config.json`` (atomically); returns the folder.

        The JSON holds ``{"format": "vqaudio-tokenizer", "name", "config", "training", "weights_sha256"}``
        (and versions), and is also stored in the safetensors header, so the weights file alone loads too.
        """
        meta = {
            "format": MODEL_FORMAT,
            "name": self.name,
            "config": to_dict(self.config),
            "training": self.training,
        }
        folder = save_model_file(folder, self.model.release_state_dict(), meta)
        self._hash = str(read_meta(folder)["weights_sha256"])
        self.path = folder / WEIGHTS_FILE
        return folder

    def to(self, device: str | torch.device) -> Tokenizer:
        """Move the model to ``device``; returns self."""
        self.model.to(device)
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
    def hash(self) -> str:
        """sha256 of the weights (the model file's ``weights_sha256``), as of load/save."""
        if self._hash is None:
            return weights_hash(clean_state_dict(self.model.release_state_dict()))
        return self._hash

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

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
    @torch.inference_mode()
    def encode(
        self,
        wav: AudioLike,
        sample_rate: int,
        n_q: int | None = None,
        chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    ) -> Tensor:
        """Audio -> codes.

        Args:
            wav: mono float audio, numpy or torch: [T], or a batch [B, T] of equal lengths. A [C, T]
                multi-channel array cannot be told from a batch: downmix it first (``wav.mean(0)``).
            sample_rate: the rate of ``wav``; other rates than ``self.sample_rate`` are resampled (soxr).
            n_q: codebooks to keep (residual VQ: the first n_q); None: all.
            chunk_seconds: inputs longer than this are encoded in overlapping windows (bounded memory,
                same codes as encoding at once).
        Returns:
            int64 codes on the model's device, [P + n_q, F] for [T] input or [B, P + n_q, F] for [B, T]
            input (P = ``pitch_rows``: the pitch row first), F = ceil(T' / hop_length) where T' is the length
            at ``self.sample_rate``.
        """
        rows, batched = self._audio_rows(wav, sample_rate, "encode")
        codes = self._encode_rows(rows, n_q, chunk_seconds)
        stacked = torch.stack(codes)  # equal lengths in, equal lengths out: [B, n_q, F]
        return stacked if batched else stacked[0]

    @torch.inference_mode()
    def encode_batch(
        self,
        wavs: Sequence[AudioLike],
        sample_rate: int,
        n_q: int | None = None,
        chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    ) -> TokenBatch:
        """Audio of unequal lengths -> padded codes; each item's codes equal ``encode`` of it alone.

        Args:
            wavs: B mono [T_i] waveforms (numpy or torch) at ``sample_rate``.
            sample_rate, n_q, chunk_seconds: as in ``encode``.
        Returns:
            TokenBatch(codes [B, n_q, F_max], lengths [B] frames, num_samples [B] at ``self.sample_rate``).
        """
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
        codes = self._encode_rows(rows, n_q, chunk_seconds)
        lengths = [item_codes.shape[-1] for item_codes in codes]
        padded = torch.zeros(
            len(codes), codes[0].shape[0], max(lengths), dtype=torch.long, device=codes[0].device
        )
        for index, item_codes in enumerate(codes):
            padded[index, :, : item_codes.shape[-1]] = item_codes
        return TokenBatch(
            padded,
            torch.tensor(lengths, dtype=torch.long),
            torch.tensor([row.shape[-1] for row in rows], dtype=torch.long),
        )

    def _encode_rows(self, rows: list[Tensor], n_q: int | None, chunk_seconds: float) -> list[Tensor]:
        """Mono [T_i] rows at the model rate -> [P + n_q, F_i] codes, as one ``model.encode`` call each."""
        self._check_n_q(n_q)
        hop = self.hop_length
        num_frames = [self.model.num_frames(row.shape[-1]) for row in rows]
        return frame_map(
            rows,
            num_frames,
            lambda batch: self.model.encode(batch, n_q),  # [B, W * hop] -> [B, P + n_q, W]
            in_unit=hop,
            out_unit=1,
            context=self._context_frames(),
            core=self._chunk_frames(chunk_seconds),
        )

    @torch.inference_mode()
    def encode_file(
        self,
        path: str | Path,
        n_q: int | None = None,
        chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
        block_frames: int | None = None,
    ) -> EncodedFile:
        """An audio file -> codes, read from disk window by window: memory is bounded by one window (and the
        codes, 2 bytes per code), whatever the file's length.

        The codes equal ``encode(load_audio(path, self.sample_rate), self.sample_rate, n_q, chunk_seconds)``
        exactly: the same samples (soxr's streaming resampler equals its one-shot one) go through the same
        windows.

        Args:
            path: any format libsndfile reads; other rates are resampled, multi-channel audio averaged.
            n_q, chunk_seconds: as in ``encode``.
            block_frames: frames read from the file at a time (None: ``AudioReader``'s default).
        Returns:
            EncodedFile(codes [P + n_q, F] in the token file's storage dtype, num_samples at the model's rate).
        Raises:
            AudioError: unreadable, empty or non-finite audio, naming the file.
        """
        self._check_n_q(n_q)
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
            for piece in self._encode_reader(reader, n_q, core):  # [rows, frames]
                if filled + piece.shape[-1] > len(codes):
                    codes = np.concatenate(
                        [codes, np.empty_like(codes, shape=(len(codes) // 2 + piece.shape[-1], rows))]
                    )
                codes[filled : filled + piece.shape[-1]] = piece.T.cpu().numpy()
                filled += piece.shape[-1]
            assert reader.num_samples is not None  # every window read, so the end was reached
            return EncodedFile(codes[:filled].T, reader.num_samples)

    def _encode_reader(self, reader: AudioReader, n_q: int | None, core: int) -> Iterator[Tensor]:
        """Codes of consecutive frames, window by window, from the windows ``frame_map`` would use.

        The input's length is learnt when the reader reaches the end of the file, which it always does before
        the windows near the end are placed: a window is read as far as its end before it is placed.
        """
        hop, context = self.hop_length, self._context_frames()
        window = core + 2 * context

        def codes_of(start: int, frames: int) -> Tensor:
            """Codes of input frames [start, start + frames), zero-padded past the end as frame_map pads."""
            wav = torch.from_numpy(reader.read(start * hop, (start + frames) * hop))
            wav = F.pad(wav, (0, frames * hop - wav.shape[-1]))
            return self.model.encode(wav[None].to(self.device), n_q)[0]  # [P + n_q, frames]

        reader.read(0, window * hop + 1)
        if reader.num_samples is not None:  # a short input: one pass, as frame_map does
            yield codes_of(0, self.model.num_frames(reader.num_samples))
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
            yield codes_of(start, window)[:, keep_start - start : keep_stop - start]
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
        num_samples: int | None = None,
        chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    ) -> Tensor:
        """Codes -> audio at ``self.sample_rate``.

        Args:
            codes: integer codes, numpy or torch, [P + K', F] or a batch [B, P + K', F] (P = ``pitch_rows``);
                K' <= num_codebooks (residual VQ: the first K' codebooks give a coarser reconstruction).
            n_q: decode only the first n_q codebooks of ``codes`` (and the pitch row); None: all rows.
            num_samples: crop the audio to this many samples (e.g. the original length); None:
                F * hop_length.
            chunk_seconds: token sequences longer than this are decoded in overlapping windows.
        Returns:
            float32 audio on the model's device, [T] for [K', F] codes or [B, T] for [B, K', F].
        """
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
        upsampling = self.hop_length // head.hop_length  # iSTFT frames per token frame
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
            upsampling = self.hop_length // head.hop_length  # iSTFT frames per token frame

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

    def _audio_rows(self, wav: AudioLike, sample_rate: int, caller: str) -> tuple[list[Tensor], bool]:
        """Validate and convert to float32 mono rows [T] at the model rate on the model's device."""
        if (
            isinstance(sample_rate, bool)
            or not isinstance(sample_rate, (int, np.integer))
            or sample_rate <= 0
        ):
            raise ValueError(
                f"{caller}() needs the sample rate of the audio as a positive integer, got {sample_rate!r}"
            )
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
        if len(shape) not in (1, 2):
            raise ValueError(
                f"{caller}() expects mono audio [T] or a batch [B, T], got shape {shape}; "
                "downmix multi-channel audio and pass one waveform per row"
            )
        batched = len(shape) == 2
        rows_in = list(wav) if batched else [wav]
        if not rows_in:
            raise ValueError(f"{caller}() got an empty batch, shape {shape}")
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
