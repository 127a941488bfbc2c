"""Training the token prior: random windows, AdamW with warm-up + cosine decay, validation, exact resume.

Maximum likelihood of random fixed-length windows of token frames (``vqaudio.prior.data.WindowSampler``),
teacher-forced in one pass (van den Oord et al., 2016). AdamW (Loshchilov & Hutter, 2019) with the
package's warm-up + cosine schedule (``vqaudio.training.schedule``), gradient clipping, held-out validation in
bits per token, and checkpoints that resume exactly: weights, optimizer, step, global RNGs and the window
sampler's generator are all restored (``vqaudio.training.checkpoint``), so an interrupted run continues
with the same batches as an uninterrupted one.

Files in the run folder ``OUT``::

    model.safetensors, config.json   the release prior (best validation when keep_best), Prior.load(OUT)
    ngram_counts.npz                 unigram / bigram counts of the training tokens (eval baselines)
    checkpoint.pt                    training state (resume), weights_only-loadable
    metrics.jsonl                    one JSON object per log / validation event
    tensorboard/                     the same scalars for TensorBoard
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vqaudio.config import PriorRunConfig, TrainConfig, to_dict
from vqaudio.errors import DataError, TokenFileError
from vqaudio.io.model_file import CONFIG_FILE, WEIGHTS_FILE
from vqaudio.prior.data import (
    Utterances,
    WindowSampler,
    cap_frames,
    split_holdout,
    validated_utterances,
    with_conditions,
)
from vqaudio.prior.evaluation import corpus_nll
from vqaudio.prior.ngram import COUNTS_FILE, count_ngrams, save_counts
from vqaudio.prior.prior import Prior, token_stream
from vqaudio.prior.wavenet import WaveNetPrior
from vqaudio.progress import progress_bar
from vqaudio.training.checkpoint import (
    CHECKPOINT_FILE,
    load_checkpoint,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from vqaudio.training.schedule import learning_rate_at
from vqaudio.training.signals import StopRequest, stop_on_signals

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class TrainingResult(NamedTuple):
    prior: Prior  # the released model (best validation when keep_best)
    step: int  # optimizer updates done
    valid_bits_per_token: float | None  # of the released model
    out: Path


class TokenSet(NamedTuple):
    """A token corpus and its metadata, as ``vqaudio.io.token_file.load_tokens`` gives them."""

    corpus: Mapping[str, np.ndarray]  # utt_id -> [n_q, frames]
    meta: Mapping[str, Any]  # model_hash, model_name, n_q, codebook_size, frame_rate, ...
    source: str  # the file, for messages and the model's metadata


def resolve_config(config: PriorRunConfig, stream: Mapping[str, Any], num_speakers: int) -> PriorRunConfig:
    """Fill the token geometry and the number of speakers into the architecture; reject contradictions."""
    prior = config.prior
    for name in ("num_codebooks", "codebook_size"):
        wanted = getattr(prior, name)
        if wanted is not None and wanted != stream[name]:
            raise DataError(
                f"the recipe sets prior.{name}={wanted} but the token file has {stream[name]}; remove it "
                "from the recipe (it is read from the token file)"
            )
    if prior.num_conditions and prior.num_conditions != num_speakers:
        raise DataError(
            f"the recipe sets prior.num_conditions={prior.num_conditions} but {num_speakers} speakers were "
            "given; remove it from the recipe and pass --manifest for speaker conditioning"
        )
    prior = dataclasses.replace(
        prior,
        num_codebooks=stream["num_codebooks"],
        codebook_size=stream["codebook_size"],
        num_conditions=num_speakers,
    )
    return dataclasses.replace(config, prior=prior)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices only (not embeddings, biases or the start vector)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.dim() < 2 or "embedding" in name:
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def window_loss(model: WaveNetPrior, codes: Tensor, mask: Tensor, conditions: Tensor | None) -> Tensor:
    """Mean negative log-likelihood (nats per token) of a batch of windows, padding excluded."""
    logits = model(codes, conditions)  # [B, K, W, V]
    nats = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes.reshape(-1), reduction="none")
    nats = nats.view(codes.shape) * mask[:, None]  # [B, K, W]
    return nats.sum() / (mask.sum() * codes.shape[1])


def _schedule(config: PriorRunConfig) -> TrainConfig:
    train = config.train
    return TrainConfig(
        learning_rate=train.learning_rate,
        warmup_steps=train.warmup_steps,
        max_steps=train.max_steps,
        lr_decay=train.lr_decay,
        min_learning_rate_ratio=train.min_learning_rate_ratio,
    )


def _speaker_table(
    speaker_of: Mapping[str, str] | None, utterance_ids: list[str]
) -> tuple[list[str], dict[str, int] | None]:
    """Sorted speaker names of the training utterances, and utt_id -> condition id (None: unconditioned)."""
    if speaker_of is None:
        return [], None
    names = sorted({speaker_of[utt_id] for utt_id in utterance_ids if utt_id in speaker_of})
    if not names:
        raise DataError("the manifest names no speaker for any training utterance; check its speaker column")
    index = {name: i for i, name in enumerate(names)}
    return names, {utt_id: index[speaker] for utt_id, speaker in speaker_of.items() if speaker in index}


def _trim_metrics(path: Path, step: int) -> None:
    """Drop metric lines after ``step`` (written after the checkpoint a resumed run restarts from)."""
    if not path.is_file():
        return
    kept = [
        line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step
    ]
    path.write_text("".join(line + "\n" for line in kept))


def train_prior(
    train: TokenSet,
    config: PriorRunConfig,
    out: str | Path,
    valid: TokenSet | None = None,
    speaker_of: Mapping[str, str] | None = None,
    force: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    until_step: int | None = None,
    tokenizer_path: str | None = None,
    recipe: str | None = None,
    overrides: Sequence[str] = (),
) -> TrainingResult:
    """Train (or resume training) a prior on a token corpus.

    Args:
        train: the training tokens.
        config: the recipe; ``prior.num_codebooks`` / ``codebook_size`` / ``num_conditions`` are filled in.
        out: the run folder (see the module docstring); a checkpoint there is resumed.
        valid: held-out tokens; None holds out ``train.holdout_fraction`` of the training utterances.
        speaker_of: utt_id -> speaker name, for speaker conditioning (None: unconditioned).
        force: accept a validation file (or a resumed run) made by another tokenizer.
        overwrite: start over even if ``out`` holds a checkpoint or a model.
        progress: show a tqdm progress bar.
        until_step: stop (with a checkpoint) after this many updates, before ``max_steps``; resuming later
            follows the same curve as an uninterrupted run.
        tokenizer_path: the tokenizer the tokens came from, recorded so ``prior sample`` finds it.
        recipe, overrides: the recipe file and ``--set`` overrides ``config`` came from, recorded in the model's
            training description.
    Returns:
        the released prior, the step reached, its validation bits per token and the run folder.
    Raises:
        TokenFileError, DataError: unusable tokens, manifest or recipe; FileExistsError: ``out`` holds a model
        but no checkpoint (and no ``overwrite``); KeyboardInterrupt: after Ctrl-C / SIGTERM (in the main
        thread: once the current step is done and a checkpoint is written).
    """
    out = Path(out)
    stream = token_stream(train.meta, tokenizer_path)
    utterances = validated_utterances(
        train.corpus, stream["num_codebooks"], stream["codebook_size"], train.source
    )
    speakers, condition_of = _speaker_table(speaker_of, utterances.ids)
    config = resolve_config(config, stream, len(speakers))
    utterances = with_conditions(utterances, condition_of)
    validation = _validation_set(utterances, valid, stream, condition_of, config, force)
    if valid is None:
        utterances, validation = split_holdout(utterances, config.train.holdout_fraction)
        if validation is not None:
            log.info(
                "holding out %d utterances (%d frames) of %s for validation (train.holdout_fraction=%g)",
                len(validation.ids),
                validation.num_frames,
                train.source,
                config.train.holdout_fraction,
            )
    if validation is not None:
        validation = cap_frames(validation, config.train.max_validation_frames)
    train_config = config.train

    checkpoint_path = out / CHECKPOINT_FILE
    if overwrite:
        for name in (CHECKPOINT_FILE, WEIGHTS_FILE, CONFIG_FILE, METRICS_FILE, COUNTS_FILE):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / TENSORBOARD_DIR, ignore_errors=True)
    elif not checkpoint_path.is_file() and (out / WEIGHTS_FILE).is_file():
        raise FileExistsError(
            f"{out} already holds a model but no checkpoint to resume; pass --overwrite or choose another "
            "--out"
        )
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(train_config.seed)
    model = WaveNetPrior(config.prior)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, train_config.weight_decay),
        lr=train_config.learning_rate,
        betas=train_config.betas,
    )
    sampler = WindowSampler(
        utterances, train_config.window_frames, train_config.batch_size, train_config.seed
    )
    run = {
        "tokens": stream,
        "speakers": speakers,
        "train_tokens": train.source,
        "train_frames": utterances.num_frames,
        "train_utterances": len(utterances.ids),
        "valid_tokens": valid.source if valid else "held out",
        "recipe": recipe,
        "overrides": list(overrides),
    }
    step, best, elapsed = 0, math.inf, 0.0
    if checkpoint_path.is_file():
        state = load_checkpoint(checkpoint_path)
        _check_resume(state, config, stream, speakers, checkpoint_path, force)
        model.load_state_dict(state["model"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        sampler.generator.set_state(state["sampler"]["generator"])
        restore_rng_states(state["rng"])
        step = int(state["step"])
        best = float(state["validation"].get("best_bits_per_token", math.inf))
        elapsed = float(state["run"].get("elapsed_seconds", 0.0))
        log.info("resuming %s at step %d", out, step)
        _trim_metrics(out / METRICS_FILE, step)
    if not (out / COUNTS_FILE).is_file():
        save_counts(out / COUNTS_FILE, count_ngrams(utterances.codes, stream["codebook_size"]))
    log.info(
        "training a %.2f M-parameter prior (receptive field %d frames = %.2f s) on %d utterances, %d frames",
        sum(p.numel() for p in model.parameters()) / 1e6,
        model.receptive_field,
        model.receptive_field / stream["frame_rate"],
        len(utterances.ids),
        utterances.num_frames,
    )

    writer = None
    if train_config.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / TENSORBOARD_DIR), purge_step=step)
    metrics = (out / METRICS_FILE).open("a")
    last_valid: float | None = None if not math.isfinite(best) else best

    def record(entry: dict[str, Any]) -> None:
        metrics.write(json.dumps(entry) + "\n")
        metrics.flush()
        if writer is not None:
            for key, value in entry.items():
                if key not in ("step", "split") and isinstance(value, (int, float)):
                    writer.add_scalar(f"{entry['split']}/{key}", value, entry["step"])

    def checkpoint() -> None:
        if validation is None:  # no validation to pick the best: release the latest weights
            release(None)
        save_checkpoint(
            checkpoint_path,
            {
                "step": step,
                "config": to_dict(config),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": {"step": step},
                "rng": rng_states(),
                "sampler": {"generator": sampler.generator.get_state()},
                "run": {**run, "elapsed_seconds": elapsed},
                "validation": {"best_bits_per_token": best} if math.isfinite(best) else {},
            },
        )

    def release(valid_bits: float | None) -> None:
        training = {
            **run,
            "step": step,
            "valid_bits_per_token": valid_bits,
            "elapsed_seconds": round(elapsed, 1),
        }
        Prior(copy.deepcopy(model), config, stream, speakers, training).save(out)

    def validate() -> None:
        nonlocal best, last_valid
        assert validation is not None
        totals = corpus_nll(model, validation)
        bits = float(totals.nats.sum() / math.log(2) / (totals.num_frames * model.num_codebooks))
        per_codebook = [float(x) for x in totals.nats / math.log(2) / totals.num_frames]
        record({"step": step, "split": "valid", "bits_per_token": bits, "bits_per_codebook": per_codebook})
        if writer is not None:
            for codebook, value in enumerate(per_codebook, start=1):
                writer.add_scalar(f"valid/bits_per_token_codebook_{codebook}", value, step)
        if bits < best or not train_config.keep_best:
            best = min(best, bits)
            last_valid = bits
            release(bits)

    stop = min(train_config.max_steps, until_step if until_step is not None else train_config.max_steps)
    bar = progress_bar(
        total=train_config.max_steps,
        initial=step,
        disable=None if progress else True,
        unit="step",
        dynamic_ncols=True,
    )
    window_start, window_frames, window_nats, window_steps = time.perf_counter(), 0, 0.0, 0
    model.train()
    threads = torch.get_num_threads()
    if train_config.num_threads:
        torch.set_num_threads(train_config.num_threads)
    updating = False  # between the first and the last parameter update of a step: no checkpoint then
    stop_request = StopRequest()
    with stop_on_signals(stop_request):
        try:
            while step < stop:
                tic = time.perf_counter()
                learning_rate = learning_rate_at(step, _schedule(config))
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate
                batch = sampler.sample()
                loss = window_loss(model, batch.codes, batch.mask, batch.conditions)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), train_config.grad_clip))
                updating = True
                optimizer.step()
                step += 1
                updating = False
                elapsed += time.perf_counter() - tic
                window_frames += int(batch.mask.sum())
                window_nats += float(loss.detach())
                window_steps += 1
                bar.update(1)
                if step % train_config.log_every == 0 or step == train_config.max_steps:
                    bits = window_nats / window_steps / math.log(2)
                    speed = window_frames / max(time.perf_counter() - window_start, 1e-9)
                    record(
                        {
                            "step": step,
                            "split": "train",
                            "bits_per_token": bits,
                            "learning_rate": learning_rate,
                            "grad_norm": grad_norm,
                            "frames_per_second": speed,
                        }
                    )
                    bar.set_postfix(
                        bits=f"{bits:.3f}", valid="-" if last_valid is None else f"{last_valid:.3f}"
                    )
                    window_start, window_frames, window_nats, window_steps = time.perf_counter(), 0, 0.0, 0
                if validation is not None and (
                    step % train_config.validate_every == 0 or step == train_config.max_steps
                ):
                    validate()
                if step % train_config.checkpoint_every == 0 or step == stop:
                    checkpoint()
                if stop_request.requested:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            if updating:
                log.warning(
                    "interrupted during a weight update at step %d: no checkpoint written; the last one is kept",
                    step,
                )
            else:
                checkpoint()
                log.warning(
                    "interrupted at step %d; checkpoint written to %s; run the same command again to resume",
                    step,
                    checkpoint_path,
                )
            raise
        finally:
            torch.set_num_threads(threads)
            bar.close()
            metrics.close()
            if writer is not None:
                writer.close()
    if validation is None or not (out / WEIGHTS_FILE).is_file():
        release(last_valid)
    released = Prior.load(out)
    return TrainingResult(released, step, released.training.get("valid_bits_per_token"), out)


def _validation_set(
    utterances: Utterances,
    valid: TokenSet | None,
    stream: Mapping[str, Any],
    condition_of: Mapping[str, int] | None,
    config: PriorRunConfig,
    force: bool,
) -> Utterances | None:
    """The validated held-out corpus from ``valid`` (None when it is not given)."""
    if valid is None:
        return None
    valid_stream = token_stream(valid.meta)
    if (valid_stream["num_codebooks"], valid_stream["codebook_size"]) != (
        stream["num_codebooks"],
        stream["codebook_size"],
    ):
        raise TokenFileError(
            f"{valid.source}: {valid_stream['num_codebooks']} x {valid_stream['codebook_size']} "
            "codes, "
            f"but the training tokens have {stream['num_codebooks']} x {stream['codebook_size']}"
        )
    if valid_stream["tokenizer_hash"] != stream["tokenizer_hash"] and not force:
        raise TokenFileError(
            f"{valid.source}: made by tokenizer {valid_stream['tokenizer_hash'][:12]}, the training tokens "
            f"by {stream['tokenizer_hash'][:12]}; tokenize both with the same model (or pass --force)"
        )
    held = validated_utterances(valid.corpus, stream["num_codebooks"], stream["codebook_size"], valid.source)
    return with_conditions(held, condition_of)


def _check_resume(
    state: Mapping[str, Any],
    config: PriorRunConfig,
    stream: Mapping[str, Any],
    speakers: list[str],
    path: Path,
    force: bool,
) -> None:
    """Refuse to resume a checkpoint with another architecture, token stream or speaker set."""
    saved_prior = state["config"].get("prior")
    if saved_prior != to_dict(config.prior):
        raise DataError(
            f"{path}: the checkpoint's prior architecture differs from the recipe's; resume with the recipe "
            "it was started with, pass --overwrite to start over, or choose another --out"
        )
    saved_stream = state["run"].get("tokens", {})
    if saved_stream.get("tokenizer_hash") != stream["tokenizer_hash"] and not force:
        raise TokenFileError(
            f"{path}: the run was started on tokens of tokenizer "
            f"{str(saved_stream.get('tokenizer_hash'))[:12]}, "
            f"these are from {stream['tokenizer_hash'][:12]}; pass the same token file (or --force)"
        )
    if list(state["run"].get("speakers", [])) != speakers:
        raise DataError(f"{path}: the run was started with another speaker set; pass the same --manifest")
    if state["config"].get("train") != to_dict(config.train):
        log.info(
            "resuming with changed training settings (recipe train section differs from the checkpoint's)"
        )
