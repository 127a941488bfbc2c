"""From prior samples to audio: finding the prior's tokenizer, encoding a speech prompt, writing the results.

A prior's codes only mean something through the tokenizer it was trained on, identified by its weights hash
(``Prior.tokenizer_hash``). ``find_tokenizer`` tries, in order: an explicit path (``--tokenizer``), the path
or name recorded in the prior, and the embedded default tokenizer, and accepts the first whose hash matches.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.config import SAMPLE_SECONDS, check_value
from vqaudio.errors import AudioError, InputError, ModelFileError
from vqaudio.io.atomic import atomic_folder, atomic_path, check_output
from vqaudio.io.audio import load_one_file, save_audio
from vqaudio.prior.prior import Prior

log = logging.getLogger(__name__)

SAMPLES_INFO = "samples.json"


def find_tokenizer(
    prior: Prior,
    override: str | Path | None = None,
    force: bool = False,
    device: str | torch.device = "cpu",
) -> Any:
    """The tokenizer whose codes the prior models.

    Args:
        prior: the prior.
        override: a tokenizer model path that replaces the search.
        force: accept ``override`` even when its hash differs from the prior's tokenizer.
        device: where the tokenizer runs.
    Returns:
        a ``vqaudio.codec.tokenizer.Tokenizer``.
    Raises:
        ModelFileError: no matching tokenizer found (the message says which one is needed).
    """
    wanted = prior.tokenizer_hash
    if override is not None:
        tokenizer = Tokenizer.load(override, device=device)
        if tokenizer.hash != wanted and not force:
            raise ModelFileError(
                f"{override}: tokenizer hash {tokenizer.hash[:12]} differs from the one the prior was "
                f"trained on ({wanted[:12]}, {prior.tokens.get('tokenizer_name')}); its codes mean different "
                "things. Pass the right --tokenizer, or --force to decode anyway"
            )
        return tokenizer
    tried = []
    candidates: list[str | None] = [prior.tokens.get("tokenizer_path"), prior.tokens.get("tokenizer_name")]
    for candidate in [c for c in candidates if c and Path(c).exists()] + [None]:
        label = candidate or "the embedded default tokenizer"
        try:
            tokenizer = Tokenizer.load(candidate, device=device)
        except ModelFileError as exc:
            tried.append(f"{label}: not installed" if candidate is None else f"{label}: {exc}")
            continue
        if tokenizer.hash == wanted:
            log.info("decoding with %s (hash %s)", label, wanted[:12])
            return tokenizer
        tried.append(f"{label}: hash {tokenizer.hash[:12]}")
    raise ModelFileError(
        f"no tokenizer with hash {wanted[:12]} (the prior was trained on tokens of "
        f"{prior.tokens.get('tokenizer_name')!r}); tried {'; '.join(tried)}. Pass --tokenizer PATH, or "
        "--tokens-only to write tokens without audio"
    )


def encode_prompt(tokenizer: Any, path: str | Path, prior: Prior, seconds: float | None = None) -> Tensor:
    """A speech file -> the prior's codes [n_q, P] to continue.

    The audio is read at the tokenizer's sample rate (other rates are resampled, stereo is averaged) and
    optionally cut to its first ``seconds``. A residual tokenizer with more codebooks than the prior keeps its
    first ``n_q`` (the coarse ones the prior models).

    Raises:
        AudioError: unreadable audio, or shorter than ``seconds``; InputError: fewer codebooks than the prior.
    """
    wav = load_one_file(path, tokenizer.sample_rate)
    if seconds is not None:
        check_value("--prompt-seconds", seconds, SAMPLE_SECONDS)
        wanted = round(seconds * tokenizer.sample_rate)
        if wanted < 1:
            raise InputError(f"--prompt-seconds must be positive, got {seconds}")
        if wanted > wav.shape[0]:
            raise AudioError(
                f"{path}: the prompt is {wav.shape[0] / tokenizer.sample_rate:.2f} s long, shorter than the "
                f"{seconds} s asked for; lower --prompt-seconds or drop it to use the whole file"
            )
        wav = wav[:wanted]
    if tokenizer.num_codebooks < prior.num_codebooks:
        raise InputError(
            f"the tokenizer gives {tokenizer.num_codebooks} codebooks, the prior models {prior.num_codebooks}"
        )
    # n_q < num_codebooks keeps the coarse residual stages; the tokenizer refuses it for grouped VQ
    codes = tokenizer.encode(wav, tokenizer.sample_rate, n_q=prior.num_codebooks)  # [n_q, P]
    return torch.as_tensor(codes).long().cpu()


class SampleFiles(NamedTuple):
    tokens: list[Path]  # one [n_q, frames] .npy per sample
    audio: list[Path]  # one .wav per sample (empty when no tokenizer decoded them)
    info: Path  # samples.json: the settings and files


def write_samples(
    out: str | Path,
    codes: Tensor,
    prior: Prior,
    tokenizer: Any | None,
    settings: dict[str, Any],
    prefix: str = "sample",
    overwrite: bool = False,
) -> SampleFiles:
    """Write each sample's tokens (``.npy`` [n_q, frames]) and, with a tokenizer, its decoded WAV.

    The folder is built under a temporary name and replaces ``out`` when complete, so no file of an earlier
    run stays beside a ``samples.json`` that does not list it.

    Args:
        out: the output folder.
        codes: [N, n_q, frames] sampled codes.
        prior: the prior that sampled them (recorded in samples.json).
        tokenizer: decodes the codes; None writes tokens only.
        settings: sampling settings to record (seed, temperature, ...).
        overwrite: replace an existing, non-empty ``out`` (only if it holds nothing but samples).
    Raises:
        FileExistsError: ``out`` is not empty and ``overwrite`` is False; OutputError: see ``check_output``.
    """
    out = check_samples_folder(out, overwrite)
    dtype = np.int16 if prior.codebook_size <= 32767 else np.int32
    token_files: list[Path] = []
    audio_files: list[Path] = []
    with atomic_folder(out, overwrite=overwrite) as staging:
        for index, sample in enumerate(codes):
            name = f"{prefix}_{index:03d}"
            with atomic_path(staging / f"{name}.npy") as tmp, open(tmp, "wb") as handle:
                np.save(handle, sample.cpu().numpy().astype(dtype))
            token_files.append(out / f"{name}.npy")
            if tokenizer is not None:
                with torch.inference_mode():
                    wav = tokenizer.decode(sample)
                save_audio(staging / f"{name}.wav", wav, tokenizer.sample_rate)
                audio_files.append(out / f"{name}.wav")
        record = {
            "prior": str(prior.path) if prior.path else None,
            "tokenizer_hash": prior.tokenizer_hash,
            "frame_rate": prior.frame_rate,
            "num_codebooks": prior.num_codebooks,
            **settings,
            "tokens": [path.name for path in token_files],
            "audio": [path.name for path in audio_files],
        }
        with atomic_path(staging / SAMPLES_INFO) as tmp:
            tmp.write_text(json.dumps(record, indent=2) + "\n")
    return SampleFiles(token_files, audio_files, out / SAMPLES_INFO)


def check_samples_folder(out: str | Path, overwrite: bool) -> Path:
    """Check before sampling that ``out`` can take the samples (see ``vqaudio.io.atomic.check_output``)."""
    return check_output(
        out, overwrite=overwrite, folder=True, replaceable=_sample_file, what="`vqaudio prior sample`"
    )


def _sample_file(relative: Path) -> bool:
    return relative.name == SAMPLES_INFO or re.fullmatch(r"[^/]+_\d+\.(npy|wav)", str(relative)) is not None


def frames_for(seconds: float, frame_rate: float) -> int:
    """Seconds -> a whole number of token frames (at least 1); seconds in ``vqaudio.config.SAMPLE_SECONDS``."""
    check_value("--seconds", seconds, SAMPLE_SECONDS)
    return max(1, round(seconds * frame_rate))


def speaker_list(prior: Prior, speaker: str | None, count: int) -> Sequence[str] | None:
    """Conditioning for ``count`` samples: the named speaker for all, or an error naming the choices."""
    if not prior.speakers:
        if speaker is not None:
            raise InputError("this prior was trained without speaker conditioning; drop --speaker")
        return None
    if speaker is None:
        raise InputError(
            f"this prior is conditioned on {len(prior.speakers)} speakers; pass --speaker NAME, one of "
            f"{', '.join(prior.speakers[:10])}{', ...' if len(prior.speakers) > 10 else ''}"
        )
    return [speaker] * count
