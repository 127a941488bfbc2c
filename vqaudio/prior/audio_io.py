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

import torch
from torch import Tensor

from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.config import SAMPLE_SECONDS, check_value
from vqaudio.errors import AudioError, InputError, ModelFileError
from vqaudio.io.atomic import atomic_folder, atomic_path, check_output
from vqaudio.io.audio import load_one_file, save_audio
from vqaudio.io.token_file import TokenFileWriter, token_paths
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


SAMPLES_TOKENS = "samples.npy"  # + samples.index.tsv + samples.meta.json: an ordinary token file


class SampleFiles(NamedTuple):
    tokens: Path  # samples.npy: a token file (with its index and meta), one utterance per sample
    ids: list[str]  # the samples' utterance ids in it: sample_000, sample_001, ...
    audio: list[Path]  # one .wav per sample, <id>.wav (empty when no tokenizer decoded them)
    info: Path  # samples.json: the settings and files


class TokenLayout(NamedTuple):
    """What a token file says about the tokenizer of the codes a prior samples."""

    sample_rate: int
    hop_length: int
    pitch_rows: int  # 1: row 0 is the pitch row
    pitch_levels: int | None
    model_path: str | None
    model_num_codebooks: int | None


def token_layout(prior: Prior, tokenizer: Any | None) -> TokenLayout:
    """The token-file facts of a prior's samples: from ``tokenizer`` when given, else from the prior's record of
    its training tokens; a prior trained before that record held the pitch row asks its tokenizer (found by
    hash, as ``find_tokenizer``), and without one the samples are written as having no pitch row (a warning
    says so).

    Raises:
        ValueError: the prior records no sample rate or hop length and no tokenizer is given.
    """
    if tokenizer is not None:
        pitch_rows = int(tokenizer.pitch_rows)
        return TokenLayout(
            int(tokenizer.sample_rate),
            int(tokenizer.hop_length),
            pitch_rows,
            int(tokenizer.config.model.pitch.levels) if pitch_rows else None,
            None if tokenizer.path is None else str(tokenizer.path),
            int(tokenizer.num_codebooks),
        )
    tokens = prior.tokens
    if not tokens.get("sample_rate") or not tokens.get("hop_length"):
        raise ValueError(
            "this prior does not record its tokenizer's sample rate and hop length, which a token file needs; "
            "pass --tokenizer (and drop --tokens-only)"
        )
    if "pitch_rows" not in tokens:
        try:
            return token_layout(prior, find_tokenizer(prior))
        except ModelFileError:
            log.warning(
                "the prior's tokenizer (hash %s) was not found: the samples' token file says they have no pitch "
                "row; pass --tokenizer to record what they hold",
                str(prior.tokenizer_hash)[:12],
            )
    pitch_rows = int(tokens.get("pitch_rows") or 0)
    return TokenLayout(
        int(tokens["sample_rate"]),
        int(tokens["hop_length"]),
        pitch_rows,
        tokens.get("pitch_levels") if pitch_rows else None,
        tokens.get("tokenizer_path"),
        None,
    )


def write_samples(
    out: str | Path,
    codes: Tensor,
    prior: Prior,
    tokenizer: Any | None,
    settings: dict[str, Any],
    prefix: str = "sample",
    overwrite: bool = False,
) -> SampleFiles:
    """Write the samples as one token file, ``out/samples.npy`` (+ ``.index.tsv`` + ``.meta.json``, as
    ``vqaudio tokenize`` writes: resynth, info, export and prior eval read it), one utterance ``sample_NNN`` per
    sample, and, with a tokenizer, each sample decoded to ``out/sample_NNN.wav``; ``samples.json`` records the
    settings.

    The folder is built under a temporary name and replaces ``out`` when complete, so no file of an earlier
    run stays beside a ``samples.json`` that does not list it.

    Args:
        out: the output folder.
        codes: [N, n_q, frames] sampled codes.
        prior: the prior that sampled them (recorded in samples.json and the token file's meta).
        tokenizer: decodes the codes; None writes tokens only (the token file's facts then come from the
            prior's record, ``token_layout``).
        settings: sampling settings to record (seed, temperature, ...).
        overwrite: replace an existing, non-empty ``out`` (only if it holds nothing but samples).
    Raises:
        FileExistsError: ``out`` is not empty and ``overwrite`` is False; OutputError: see ``check_output``.
    """
    out = check_samples_folder(out, overwrite)
    layout = token_layout(prior, tokenizer)
    width = max(3, len(str(len(codes) - 1)))  # ids sort in sample order
    ids = [f"{prefix}_{index:0{width}d}" for index in range(len(codes))]
    audio_files: list[Path] = []
    num_rows = int(codes.shape[1])
    extra_meta = {
        "model_path": layout.model_path,
        "model_num_codebooks": layout.model_num_codebooks,
        "n_q": num_rows - layout.pitch_rows,
        "pitch_rows": layout.pitch_rows,
        "pitch_levels": layout.pitch_levels,
        "source": "vqaudio prior sample",
        "prior": str(prior.path) if prior.path else None,
    }
    with atomic_folder(out, overwrite=overwrite) as staging:
        with TokenFileWriter(
            staging / SAMPLES_TOKENS,
            num_codebooks=num_rows,
            codebook_size=prior.codebook_size,
            sample_rate=layout.sample_rate,
            hop_length=layout.hop_length,
            model_name=str(prior.tokens.get("tokenizer_name") or ""),
            model_hash=str(prior.tokenizer_hash),
            extra_meta=extra_meta,
        ) as writer:
            for utt_id, sample in zip(ids, codes, strict=True):
                wav_path = out / f"{utt_id}.wav"
                source = str(wav_path) if tokenizer is not None else "(tokens only)"
                writer.add(utt_id, source, sample, int(sample.shape[1]) * layout.hop_length)
        if tokenizer is not None:
            for utt_id, sample in zip(ids, codes, strict=True):
                with torch.inference_mode():
                    wav = tokenizer.decode(sample)
                save_audio(staging / f"{utt_id}.wav", wav, tokenizer.sample_rate)
                audio_files.append(out / f"{utt_id}.wav")
        record = {
            "prior": str(prior.path) if prior.path else None,
            "tokenizer_hash": prior.tokenizer_hash,
            "frame_rate": prior.frame_rate,
            "num_codebooks": prior.num_codebooks,
            **settings,
            "tokens": SAMPLES_TOKENS,
            "ids": ids,
            "audio": [path.name for path in audio_files],
        }
        with atomic_path(staging / SAMPLES_INFO) as tmp:
            tmp.write_text(json.dumps(record, indent=2) + "\n")
    return SampleFiles(out / SAMPLES_TOKENS, ids, audio_files, out / SAMPLES_INFO)


def check_samples_folder(out: str | Path, overwrite: bool) -> Path:
    """Check before sampling that ``out`` can take the samples (see ``vqaudio.io.atomic.check_output``)."""
    return check_output(
        out, overwrite=overwrite, folder=True, replaceable=_sample_file, what="`vqaudio prior sample`"
    )


def _sample_file(relative: Path) -> bool:
    """What ``prior sample`` writes (``sample_NNN.npy``: the per-sample codes of vqaudio 0.2.0)."""
    name = str(relative)
    return name in (SAMPLES_INFO, *(path.name for path in token_paths(SAMPLES_TOKENS))) or (
        re.fullmatch(r"[^/]+_\d+\.(npy|wav)", name) is not None
    )


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
