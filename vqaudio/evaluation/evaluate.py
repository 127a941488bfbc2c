"""``vqaudio eval``: a tokenizer and the classical baselines on the same utterances, into a report folder.

For every bitrate the model serves (each n_q of a residual VQ trained with quantizer dropout, as in
SoundStream, Zeghidour et al., 2021, https://arxiv.org/abs/2107.03312; otherwise all codebooks) and for
every installed baseline codec (Codec2, Opus), each whole utterance is encoded and decoded, the baselines'
output is aligned to the reference (``alignment``), and every metric (``metrics``, ``voice``) is computed; the
reference's voice analyses (Praat, DNSMOS, recognition) are made once per utterance and the original gets a
row of its own for the metrics that need no reference; codebook usage is counted on the full-bitrate codes
(``codebook_stats``). The example clips are chosen once every utterance is scored (``choose_examples``: the
median, worst and best of the model at its highest n_q) and decoded again for the report. ``run_evaluation``
writes the report folder atomically (``report`` renders it, ``plots`` draws it)::

    corpus ─► utterance ─► tokenizer.encode ─► codes [K, F] ─┬─► decode(codes[:n_q]) ─► scores vqaudio_nq{n_q}
                 │                                           └─► histograms ─► codebook usage
                 ├──────► c2enc/c2dec, opusenc/opusdec ─► align ─► scores codec2_3200, opus_6k, ...
                 └──────► DNSMOS, recognition ─► scores original
"""

from __future__ import annotations

import logging
import os
import platform
import random
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vqaudio._version import __version__
from vqaudio.config import THREADS, check_value
from vqaudio.data import load_corpus
from vqaudio.errors import AudioError, DataError, InputError
from vqaudio.evaluation.alignment import align_to_reference
from vqaudio.evaluation.baselines import BaselineError, default_baselines, run_baseline
from vqaudio.evaluation.codebook_stats import code_histograms, usage_from_histograms
from vqaudio.evaluation.metrics import (
    METRICS,
    NO_REFERENCE_METRICS,
    score_clip,
    score_original,
    unavailable_metrics,
)
from vqaudio.evaluation.phonetic_probe import ProbeOptions, run_probe
from vqaudio.evaluation.report import write_report
from vqaudio.evaluation.results import (
    EXAMPLE_RANKING_METRICS,
    ORIGINAL,
    EvalOptions,
    EvalResult,
    EvaluatedUtterance,
    ExampleChoice,
    SystemResult,
    SystemSpec,
)
from vqaudio.evaluation.voice import DNSMOS_METRICS, PRAAT_METRICS, WER_METRIC, VoiceAnalysis
from vqaudio.io.atomic import atomic_folder, check_output
from vqaudio.io.audio import load_audio
from vqaudio.progress import progress_bar

if TYPE_CHECKING:
    from vqaudio.codec.tokenizer import Tokenizer

log = logging.getLogger(__name__)

EXAMPLE_MIN_PEAK = 1e-3  # -60 dBFS: quieter clips make useless examples


def served_n_q(tokenizer: Tokenizer) -> tuple[int, ...]:
    """The codebook counts a model is meant to decode with.

    Every n_q for a residual VQ trained with quantizer dropout (it learned to decode any prefix of its
    codebooks); only all ``num_codebooks`` otherwise.
    """
    quantizer = tokenizer.config.model.quantizer
    if quantizer.kind == "residual" and quantizer.quantizer_dropout > 0:
        return tuple(range(1, tokenizer.num_codebooks + 1))
    return (tokenizer.num_codebooks,)


def check_n_q(tokenizer: Tokenizer, n_q: tuple[int, ...] | None) -> tuple[tuple[int, ...], list[str]]:
    """Validate requested codebook counts against the model.

    Returns:
        (sorted unique n_q to evaluate, notes for the report).
    Raises:
        ValueError: an n_q outside 1..num_codebooks, or fewer codebooks than a group VQ needs.
    """
    if n_q is None:
        return served_n_q(tokenizer), []
    num_codebooks = tokenizer.num_codebooks
    values = sorted(set(n_q))
    if not values:
        raise InputError("n_q got no values; pass e.g. 1,2,4,8, or None for every served bitrate")
    bad = [value for value in values if not 1 <= value <= num_codebooks]
    if bad:
        raise InputError(
            f"n_q {','.join(map(str, values))}: {bad} outside 1..{num_codebooks} (the model has "
            f"{num_codebooks} codebooks)"
        )
    quantizer = tokenizer.config.model.quantizer
    notes = []
    if quantizer.kind == "group" and values != [num_codebooks]:
        raise InputError(
            f"n_q {','.join(map(str, values))}: a group VQ model decodes only with all {num_codebooks} "
            f"codebooks (each holds part of the latent); use {num_codebooks} or leave n_q out"
        )
    if quantizer.kind == "residual" and quantizer.quantizer_dropout == 0 and values != [num_codebooks]:
        notes.append(
            "the model was trained without quantizer dropout, so n_q below "
            f"{num_codebooks} is not a bitrate it was trained to serve; those rows show what truncation costs"
        )
    return tuple(values), notes


def model_systems(tokenizer: Tokenizer, n_q_values: tuple[int, ...]) -> list[SystemSpec]:
    """One ``vqaudio_nq{n}`` system per codebook count (the model's name is in the report header)."""
    return [
        SystemSpec(
            f"vqaudio_nq{n_q}",
            "vqaudio",
            tokenizer.bitrate_at(n_q) / 1000,
            n_q,
            (tokenizer.pitch_rows + n_q) * tokenizer.frame_rate,  # a pitch row is a token too
            None,
        )
        for n_q in n_q_values
    ]


def baseline_systems(enabled: bool) -> tuple[list[SystemSpec], dict[str, str]]:
    """The baselines whose tools are installed, and a note for each one that is not."""
    if not enabled:
        return [], {}
    systems, missing = [], {}
    for baseline in default_baselines():
        absent = baseline.missing_tools()
        if absent:
            missing[baseline.name] = (
                f"{', '.join(absent)} not found on PATH (install the Debian package '{baseline.package}')"
            )
            continue
        systems.append(SystemSpec(baseline.name, baseline.codec, baseline.nominal_kbps, None, None, baseline))
    return systems, missing


def evaluate(
    source: str | Path,
    tokenizer: Tokenizer,
    options: EvalOptions = EvalOptions(),
    model_path: str | Path | None = None,
) -> EvalResult:
    """Score the tokenizer (and the baselines) on a corpus; no files are written.

    Args:
        source: anything ``vqaudio.data.load_corpus`` reads (manifest, LibriSpeech tree, folder, file, list).
        tokenizer: a ``vqaudio.codec.tokenizer.Tokenizer``.
        options: see ``EvalOptions``.
        model_path: where the model came from (recorded in the report).
    Returns:
        EvalResult.
    Raises:
        DataError: missing or empty corpus, no readable utterance.
        AudioError: an unreadable file (without ``skip_bad``); the message names it.
        ValueError: invalid options (``n_q`` the model cannot serve, non-positive limits).
    """
    _check_options(options)
    n_q_values, notes = check_n_q(tokenizer, options.n_q)
    corpus = load_corpus(source)
    if not corpus:
        raise DataError(f"{source}: the corpus holds no utterances; point at a non-empty split")
    order = list(range(len(corpus)))
    if options.max_utterances is not None or options.max_seconds is not None:
        # a spread-out subset (not the first speaker's files) that is the same on every run
        random.Random(options.seed).shuffle(order)
    if options.max_utterances is not None:
        order = order[: options.max_utterances]

    sample_rate = tokenizer.sample_rate
    systems = [SystemResult(spec) for spec in model_systems(tokenizer, n_q_values)]
    baselines, unavailable_baselines = baseline_systems(options.baselines)
    systems += [SystemResult(spec) for spec in baselines]
    skip_metrics = {**not_requested_metrics(options), **unavailable_metrics()}
    original = SystemResult(ORIGINAL) if set(NO_REFERENCE_METRICS) - set(skip_metrics) else None
    counts = np.zeros((tokenizer.num_codebooks, tokenizer.codebook_size), dtype=np.int64)
    utterances: list[EvaluatedUtterance] = []
    skipped: list[tuple[str, str]] = []
    quiet: set[str] = set()  # utterances too quiet to be examples
    total_seconds = 0.0

    previous_threads = torch.get_num_threads()
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        _warm_up(tokenizer)
        bar = progress_bar(order, desc="eval", unit="utt", disable=not options.progress)
        for index in bar:
            if options.max_seconds is not None and total_seconds >= options.max_seconds:
                break
            utterance = corpus[index]
            try:
                reference = load_audio(utterance.path, sample_rate).numpy()
            except AudioError as exc:
                if not options.skip_bad:
                    raise
                log.warning("skipping an unusable file (--skip-bad): %s", exc.reason)
                skipped.append((str(utterance.path), exc.reason))
                continue
            seconds = reference.shape[0] / sample_rate
            if not float(np.abs(reference).max()) > EXAMPLE_MIN_PEAK:
                quiet.add(utterance.id)
            voice = VoiceAnalysis(reference, sample_rate, utterance.text)
            _evaluate_model(tokenizer, reference, utterance.id, systems, counts, skip_metrics, voice)
            _evaluate_baselines(reference, sample_rate, utterance.id, systems, skip_metrics, voice)
            if original is not None:
                original.scores[utterance.id] = score_original(voice, frozenset(skip_metrics))
            utterances.append(EvaluatedUtterance(utterance.id, str(utterance.path), seconds, utterance.text))
            total_seconds += seconds
            bar.set_postfix(seconds=f"{total_seconds:.0f}")
        bar.close()
        model_rows = [system for system in systems if system.spec.family == "vqaudio"]  # by n_q
        choice = choose_examples(model_rows[-1], options.num_examples, exclude=quiet)
        paths = {utt.id: utt.path for utt in utterances}
        examples = {
            utterance_id: _example_signals(tokenizer, paths[utterance_id], utterance_id, systems)
            for utterance_id in (choice.roles if choice is not None else ())
        }
    finally:
        torch.set_num_threads(previous_threads)

    if not utterances:
        raise DataError(
            f"{source}: no readable utterance ({len(skipped)} skipped as unreadable); check the files"
        )
    probe = None
    if options.probe is not None:
        probe = run_probe(
            options.probe,
            tokenizer,
            ProbeOptions(seed=options.seed, threads=options.threads, progress=options.progress),
        )
    return EvalResult(
        source=str(source),
        model_path=None if model_path is None else str(model_path),
        model=_model_facts(tokenizer),
        environment=_environment(tokenizer, options),
        options=options,
        systems=systems,
        original=original,
        utterances=sorted(utterances, key=lambda utt: utt.id),
        skipped=skipped,
        code_counts=counts,
        codebooks=usage_from_histograms(counts),
        unavailable_metrics=skip_metrics,
        unavailable_baselines=unavailable_baselines,
        notes=notes,
        sample_rate=sample_rate,
        frame_rate=tokenizer.frame_rate,
        examples=examples,
        probe=probe,
        example_choice=choice,
    )


def run_evaluation(
    source: str | Path,
    tokenizer: Tokenizer,
    out: str | Path,
    options: EvalOptions = EvalOptions(),
    overwrite: bool = False,
    model_path: str | Path | None = None,
) -> EvalResult:
    """``evaluate``, then write the report folder ``out`` atomically.

    Everything is written into a temporary folder beside ``out`` that is renamed to ``out`` at the end, so an
    interrupted run leaves no partial report (and an old report is only replaced once the new one is done).

    Args:
        source, tokenizer, options, model_path: as in ``evaluate``.
        out: the report folder (``report.json``, ``report.md``, PNGs, example WAVs).
        overwrite: replace an existing ``out``.
    Returns:
        the EvalResult that was written.
    Raises:
        FileExistsError: ``out`` exists and ``overwrite`` is False (checked before any work).
        and everything ``evaluate`` raises.
    """
    out = Path(out)
    _check_out(out, overwrite)
    result = evaluate(source, tokenizer, options, model_path)
    with atomic_folder(out, overwrite=overwrite) as staging:  # refuses one created meanwhile
        write_report(result, staging)
    return result


# --------------------------------------------------------------------------------------------------
# Examples
# --------------------------------------------------------------------------------------------------
def choose_examples(system: SystemResult, count: int, exclude: Collection[str] = ()) -> ExampleChoice | None:
    """The example utterances of a report: spread over the range of one system's scores.

    The utterances ``system`` scored on the first metric of ``EXAMPLE_RANKING_METRICS`` it has values of
    (and not in ``exclude``) are ranked from worst to best; the examples are the median, the worst, the best,
    then the quartiles, the eighths and so on, ``count`` distinct utterances in all (every one when fewer
    are ranked). The rank of quantile q among n utterances is ``floor(q * (n - 1) + 0.5)`` (the better of
    the two middle ones for an even n); ties are broken by utterance id.

    Args:
        system: the ranked system (``evaluate`` passes the model at its highest evaluated n_q).
        count: how many examples.
        exclude: utterance ids never chosen (silent clips).
    Returns:
        ExampleChoice with the utterances worst first, or None when ``count`` is 0 or nothing was scored.
    """
    if count <= 0:
        return None
    for metric in EXAMPLE_RANKING_METRICS:
        higher_is_better = METRICS[metric][2]
        scored = [
            (value if higher_is_better else -value, utterance_id)
            for utterance_id, scores in system.scores.items()
            if utterance_id not in exclude and np.isfinite(value := getattr(scores, metric))
        ]
        if scored:
            break
    else:
        return None
    ranked = [utterance_id for _, utterance_id in sorted(scored)]  # worst first
    picked: dict[int, str] = {}  # rank -> role
    quantiles = _example_quantiles()
    while len(picked) < min(count, len(ranked)):
        quantile = next(quantiles)
        rank = int(quantile * (len(ranked) - 1) + 0.5)
        picked.setdefault(rank, _role(quantile, rank, len(ranked)))
    chosen = [ranked[rank] for rank in sorted(picked)]
    return ExampleChoice(
        system=system.spec.name,
        metric=metric,
        candidates=len(ranked),
        roles={ranked[rank]: picked[rank] for rank in sorted(picked)},
        values={utterance_id: float(getattr(system.scores[utterance_id], metric)) for utterance_id in chosen},
    )


def _example_quantiles() -> Iterator[float]:
    """0.5, 0, 1, then 1/4, 3/4, then 1/8, 3/8, 5/8, 7/8, ...: every rank is reached eventually."""
    yield from (0.5, 0.0, 1.0)
    denominator = 4
    while True:
        yield from (numerator / denominator for numerator in range(1, denominator, 2))
        denominator *= 2


def _role(quantile: float, rank: int, count: int) -> str:
    """What the example at ``rank`` (0: worst) of ``count`` is, in words."""
    if count > 1 and rank in (0, count - 1):  # of two, the "median" is the best
        return "worst" if rank == 0 else "best"
    return "median" if quantile == 0.5 else f"percentile {quantile * 100:g}"


def _example_signals(
    tokenizer: Tokenizer, path: str, utterance_id: str, systems: list[SystemResult]
) -> dict[str, np.ndarray]:
    """{"original" and each system that scored the clip: [T] audio}, decoded again as it was scored.

    Keeping every utterance's outputs until the examples are known would cost memory in proportion to the
    corpus; decoding a few clips again costs seconds (the model is deterministic, the baselines' output is
    aligned as before).
    """
    sample_rate = tokenizer.sample_rate
    reference = load_audio(path, sample_rate).numpy()
    codes = tokenizer.encode(torch.from_numpy(reference), sample_rate)  # [P + K, F]
    signals = {"original": reference}
    for system in systems:
        spec = system.spec
        if utterance_id not in system.scores:  # the codec failed on it
            continue
        if spec.family == "vqaudio":
            output = tokenizer.decode(codes, n_q=spec.n_q, num_samples=reference.shape[0])
            signals[spec.name] = output.detach().cpu().numpy().astype(np.float32, copy=False)
        elif spec.baseline is not None:
            try:
                output_audio = run_baseline(spec.baseline, reference, sample_rate).audio
            except BaselineError as exc:
                log.warning("%s: %s failed when decoding the example again: %s", utterance_id, spec.name, exc)
                continue
            signals[spec.name] = align_to_reference(output_audio, reference, sample_rate).audio
    return signals


# --------------------------------------------------------------------------------------------------
# One utterance
# --------------------------------------------------------------------------------------------------
def _evaluate_model(
    tokenizer: Tokenizer,
    reference: np.ndarray,
    utterance_id: str,
    systems: list[SystemResult],
    counts: np.ndarray,
    skip_metrics: dict[str, str],
    voice: VoiceAnalysis,
) -> None:
    """Encode once at full n_q, decode and score every evaluated n_q."""
    sample_rate = tokenizer.sample_rate
    seconds = reference.shape[0] / sample_rate
    wav = torch.from_numpy(reference)
    # Residual VQ: the first n_q codes of a full encode are the codes of an n_q encode (each stage quantizes
    # what the stages before it left), so one encode serves every bitrate.
    codes, encode_seconds = _timed(tokenizer, lambda: tokenizer.encode(wav, sample_rate))  # [P + K, F]
    counts += code_histograms(codes[tokenizer.pitch_rows :], tokenizer.codebook_size)  # the codebooks
    for system in systems:
        spec = system.spec
        if spec.family != "vqaudio":
            continue
        n_q = spec.n_q

        def decode(n_q: int | None = n_q) -> torch.Tensor:
            return tokenizer.decode(codes, n_q=n_q, num_samples=reference.shape[0])  # keeps a pitch row

        output, decode_seconds = _timed(tokenizer, decode)
        audio = output.detach().cpu().numpy().astype(np.float32, copy=False)
        system.scores[utterance_id] = score_clip(
            audio, reference, sample_rate, frozenset(skip_metrics), voice
        )
        system.encoded_bits += round(spec.kbps * 1000 * seconds)  # fixed rate: n_q * log2(K) bits per frame
        system.audio_seconds += seconds
        system.encode_seconds += encode_seconds
        system.decode_seconds += decode_seconds


def _evaluate_baselines(
    reference: np.ndarray,
    sample_rate: int,
    utterance_id: str,
    systems: list[SystemResult],
    skip_metrics: dict[str, str],
    voice: VoiceAnalysis,
) -> None:
    """Run and score every baseline on one clip; a codec failure is recorded for that clip, not raised."""
    seconds = reference.shape[0] / sample_rate
    for system in systems:
        if system.spec.baseline is None:
            continue
        try:
            output = run_baseline(system.spec.baseline, reference, sample_rate)
        except BaselineError as exc:
            system.failures.append(f"{utterance_id}: {exc}")
            continue
        aligned = align_to_reference(output.audio, reference, sample_rate)
        system.scores[utterance_id] = score_clip(
            aligned.audio, reference, sample_rate, frozenset(skip_metrics), voice
        )
        system.lags[utterance_id] = aligned.lag
        system.encoded_bits += output.encoded_bits
        system.audio_seconds += seconds
        system.encode_seconds += output.encode_seconds
        system.decode_seconds += output.decode_seconds


def _timed(tokenizer: Tokenizer, function: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    """(result, wall seconds); waits for the accelerator so the time covers the work, not its launch."""
    device = tokenizer.device
    _synchronize(device)
    start = time.perf_counter()
    result = function()
    _synchronize(device)
    return result, time.perf_counter() - start


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _warm_up(tokenizer: Tokenizer) -> None:
    """One short encode/decode first, so one-time costs (allocations, filterbanks) stay out of the RTFs."""
    wav = torch.zeros(tokenizer.sample_rate // 2)
    tokenizer.decode(tokenizer.encode(wav, tokenizer.sample_rate))


# --------------------------------------------------------------------------------------------------
# Facts, checks, files
# --------------------------------------------------------------------------------------------------
def _model_facts(tokenizer: Tokenizer) -> dict[str, Any]:
    quantizer = tokenizer.config.model.quantizer
    return {
        "name": tokenizer.name,
        "hash": tokenizer.hash,
        "sample_rate": tokenizer.sample_rate,
        "frame_rate": tokenizer.frame_rate,
        "hop_length": tokenizer.config.model.hop_length,
        "num_codebooks": tokenizer.num_codebooks,
        "codebook_size": tokenizer.codebook_size,
        "quantizer": quantizer.kind,
        "quantizer_dropout": quantizer.quantizer_dropout,
        "first_codebook_hold": tokenizer.first_codebook_hold,
        "bitrate_kbps": tokenizer.bitrate_at(tokenizer.num_codebooks) / 1000,
        "num_parameters": sum(parameter.numel() for parameter in tokenizer.model.parameters()),
        "causal": tokenizer.config.model.causal,
    }


def _environment(tokenizer: Tokenizer, options: EvalOptions) -> dict[str, Any]:
    return {
        "vqaudio_version": __version__,
        "torch_version": torch.__version__,
        "device": str(tokenizer.device),
        "threads": options.threads or torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def not_requested_metrics(options: EvalOptions) -> dict[str, str]:
    """The metrics ``options`` leave out, with a note saying how to ask for them."""
    notes = {}
    if not options.voice:
        note = "not requested (--no-voice); leave that out to measure it"
        notes.update(dict.fromkeys((*PRAAT_METRICS, *DNSMOS_METRICS), note))
    if not wants_wer(options):
        if options.language is not None and not is_english(options.language):
            notes[WER_METRIC] = f"pocketsphinx recognises English only (--language {options.language})"
        else:
            notes[WER_METRIC] = (
                "not requested: pass --wer or --language en (English speech; about real time per system)"
            )
    return notes


def wants_wer(options: EvalOptions) -> bool:
    """Word error rates are measured when asked for, or when the corpus is said to be English."""
    return options.wer or (options.language is not None and is_english(options.language))


def is_english(language: str) -> bool:
    """``en``, ``en-US``, ``en_GB``, ``English`` ..."""
    return language.lower().replace("_", "-").split("-")[0] in ("en", "eng", "english")


def _check_options(options: EvalOptions) -> None:
    if options.wer and options.language is not None and not is_english(options.language):
        raise InputError(
            f"--wer needs English speech (pocketsphinx ships a US English model), got --language "
            f"{options.language}; leave out --wer"
        )
    if options.max_utterances is not None and options.max_utterances < 1:
        raise InputError(f"--max-utterances must be at least 1, got {options.max_utterances}")
    if options.max_seconds is not None and not options.max_seconds > 0:
        raise InputError(f"--max-seconds must be positive, got {options.max_seconds}")
    if options.num_examples < 0:
        raise InputError(f"num_examples must be >= 0, got {options.num_examples}")
    check_value("--threads", options.threads, THREADS)  # 0: torch's default


def _check_out(out: Path, overwrite: bool) -> None:
    """Before the work: a folder (or nothing) at ``out``, writable, replaced only with ``overwrite``."""
    check_output(out, overwrite=overwrite, folder=True, what="`vqaudio eval`")
