"""Training the token prior: random windows, AdamW with warm-up + cosine decay, validation, exact resume.

Maximum likelihood of random fixed-length windows of token frames (``vqaudio.prior.data.WindowSampler``),
teacher-forced in one pass (van den Oord et al., 2016). AdamW (Loshchilov & Hutter, 2019) with the
package's warm-up + cosine schedule (``vqaudio.training.schedule``), gradient clipping, held-out validation in
bits per token, and checkpoints that resume exactly: weights, optimizer, step, global RNGs and the window
sampler's generator are all restored (``vqaudio.training.checkpoint``), so an interrupted run continues
with the same batches as an uninterrupted one: the batch and the dropout of a step come from generators
seeded by (seed, rank, step). The run folder, checkpoints on exit and on Ctrl-C / SIGTERM, the logs, the
schedule and data-parallel training are vqaudio.training's (shared with the tokenizer's trainer); this module
holds the prior's step and its validation.

Devices: the CPU or a GPU (``device``). Several processes: under ``torchrun`` (``context``, see
vqaudio.training.distributed) each process draws its own windows, DDP averages the gradients, and rank 0
alone validates and writes the run folder.

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
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vqaudio.config import PriorRunConfig, to_dict
from vqaudio.devices import resolve_device
from vqaudio.errors import DataError, TokenFileError
from vqaudio.io.model_file import CONFIG_FILE, WEIGHTS_FILE, clean_state_dict
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
from vqaudio.training.checkpoint import CHECKPOINT_FILE, restore_rng_states, rng_states, save_checkpoint
from vqaudio.training.distributed import (
    SINGLE_PROCESS,
    DistributedContext,
    barrier,
    standardise_parameter_strides,
    wrap_for_ddp,
)
from vqaudio.training.logs import METRICS_FILE, TENSORBOARD_DIR, RunLog
from vqaudio.training.precision import MixedPrecision
from vqaudio.training.run import RunFolder, TrainingRun, parameter_groups, seed_step, set_learning_rate
from vqaudio.training.schedule import learning_rate_at

log = logging.getLogger(__name__)

RUN_FILES = (CHECKPOINT_FILE, WEIGHTS_FILE, CONFIG_FILE, METRICS_FILE, COUNTS_FILE, TENSORBOARD_DIR)
RUN_REFUSAL = (  # RunFolder's message for a model without a checkpoint (the prior resumes unless --overwrite)
    "{out} already holds a model but no checkpoint to resume; pass --overwrite or choose another --out"
)


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


def window_loss(model: nn.Module, codes: Tensor, mask: Tensor, conditions: Tensor | None) -> Tensor:
    """Mean negative log-likelihood (nats per token) of a batch of windows, padding excluded.

    ``model``: a ``WaveNetPrior`` (or its DDP wrapper); ``codes`` [B, K, W], ``mask`` [B, W] on its device.
    """
    logits = model(codes, conditions)  # [B, K, W, V]
    with torch.autocast(
        logits.device.type, enabled=False
    ):  # the log-softmax in float32 under mixed precision
        logits = logits.float()
        nats = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), codes.reshape(-1), reduction="none")
    nats = nats.view(codes.shape) * mask[:, None]  # [B, K, W]
    return nats.sum() / (mask.sum() * codes.shape[1])


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
    device: str | torch.device = "cpu",
    context: DistributedContext = SINGLE_PROCESS,
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
        device: where to train: auto, cpu, cuda or cuda:N (``vqaudio.devices.resolve_device``); under DDP
            with CUDA this process's GPU (``vqaudio.training.distributed.process_device``).
        context: this process's place under ``torchrun`` (``vqaudio.training.distributed.init_distributed``).
    Returns:
        the released prior, the step reached, its validation bits per token and the run folder.
    Raises:
        TokenFileError, DataError: unusable tokens, manifest or recipe; FileExistsError: ``out`` holds a model
        but no checkpoint (and no ``overwrite``); KeyboardInterrupt: after Ctrl-C / SIGTERM (in the main
        thread: once the current step is done and a checkpoint is written).
    """
    data = _training_data(train, config, valid, speaker_of, force, tokenizer_path)
    run = {
        "tokens": data.stream,
        "speakers": data.speakers,
        "train_tokens": train.source,
        "train_frames": data.utterances.num_frames,
        "train_utterances": len(data.utterances.ids),
        "valid_tokens": valid.source if valid else "held out",
        "recipe": recipe,
        "overrides": list(overrides),
    }
    trainer = PriorTrainer(
        data, out, run, force=force, overwrite=overwrite, progress=progress, device=device, context=context
    )
    step = trainer.fit(until_step)
    released = Prior.load(out)  # every process: rank 0 wrote it before the barrier at the end of fit
    return TrainingResult(released, step, released.training.get("valid_bits_per_token"), Path(out))


class _TrainingData(NamedTuple):
    """The corpora of a run, validated, and the recipe completed from them (``_training_data``)."""

    config: PriorRunConfig  # token geometry and number of speakers filled in
    stream: dict[str, Any]  # the tokens' record (vqaudio.prior.prior.token_stream)
    speakers: list[str]  # sorted; condition id = index
    utterances: Utterances  # training
    validation: Utterances | None  # held out (capped at train.max_validation_frames), or none


def _training_data(
    train: TokenSet,
    config: PriorRunConfig,
    valid: TokenSet | None,
    speaker_of: Mapping[str, str] | None,
    force: bool,
    tokenizer_path: str | None,
) -> _TrainingData:
    """Validate the token corpora and the speakers, hold out validation utterances when no ``valid`` is given,
    and fill the token geometry into the recipe."""
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
    return _TrainingData(config, stream, speakers, utterances, validation)


class StepResult(NamedTuple):
    """One optimizer update of the prior."""

    nats: float  # mean negative log-likelihood per token of the batch
    learning_rate: float
    grad_norm: float  # before clipping
    frames: int  # unpadded frames in the batch


class PriorTrainer:
    """State, step and validation of one prior training run; ``train_prior`` is the usual way in.

    The run folder, checkpoints, resume, Ctrl-C / SIGTERM, the logs and DDP are vqaudio.training's
    (``RunFolder``, ``TrainingRun``, ``RunLog``, ``wrap_for_ddp``). Only rank 0 validates, logs and writes.
    """

    def __init__(
        self,
        data: _TrainingData,
        out: str | Path,
        run: dict[str, Any],
        *,
        force: bool = False,
        overwrite: bool = False,
        progress: bool = True,
        device: str | torch.device = "cpu",
        context: DistributedContext = SINGLE_PROCESS,
    ) -> None:
        self.config, self.stream, self.speakers = data.config, data.stream, data.speakers
        self.utterances, self.validation = data.utterances, data.validation
        self.out = Path(out)
        self.device = resolve_device(device)  # auto, cpu, cuda, cuda:N (checked)
        precision = self.config.train.precision
        self.precision = MixedPrecision(
            precision, self.device
        )  # before the run folder: fp16 on the CPU fails
        self.run = {**run, "world_size": context.world_size, "precision": precision}
        self.context = context
        self.progress = progress and context.is_main
        train = self.config.train
        self.folder = RunFolder(self.out, RUN_FILES, RUN_REFUSAL, guarded=(WEIGHTS_FILE,))
        checkpoint = self.folder.open(
            resume=not overwrite,
            overwrite=overwrite,
            resumable=lambda state: self._check_resume(state, force),
            context=context,
        )
        torch.manual_seed(train.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        self.model = WaveNetPrior(self.config.prior).to(self.device)
        standardise_parameter_strides(self.model)
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.model, train.weight_decay), lr=train.learning_rate, betas=train.betas
        )
        self.sampler = WindowSampler(
            self.utterances, train.window_frames, train.batch_size, train.seed, rank=context.rank
        )
        self.best, self.elapsed = math.inf, 0.0  # best validation bits per token; seconds of training
        step = 0 if checkpoint is None else self._restore(checkpoint)
        self.training_run = TrainingRun(
            self.folder, self._write_checkpoint, step, resumed=checkpoint is not None, context=context
        )
        self.network: nn.Module = self.model
        if context.is_distributed:  # static: the last layer's residual output is never read (no gradient)
            self.network = wrap_for_ddp(self.model, self.device, static_graph=True)
        self.last_valid: float | None = None if not math.isfinite(self.best) else self.best
        if context.is_main and not (self.out / COUNTS_FILE).is_file():
            counts = count_ngrams(self.utterances.codes, self.stream["codebook_size"])
            save_counts(self.out / COUNTS_FILE, counts)
        log.info(
            "training a %.2f M-parameter prior (receptive field %d frames = %.2f s) on %d utterances, %d frames",
            sum(p.numel() for p in self.model.parameters()) / 1e6,
            self.model.receptive_field,
            self.model.receptive_field / self.stream["frame_rate"],
            len(self.utterances.ids),
            self.utterances.num_frames,
        )
        if context.is_distributed:
            log.info(
                "%d processes, %d windows per step each, on %s", context.world_size, train.batch_size, device
            )
        self.run_log = (
            RunLog(self.out, step, tensorboard=train.tensorboard, silence_with="train.tensorboard: false")
            if context.is_main
            else None
        )

    def _check_resume(self, state: dict[str, Any], force: bool) -> bool:
        _check_resume(state, self.config, self.stream, self.speakers, self.folder.checkpoint_path, force)
        return True

    def _restore(self, state: dict[str, Any]) -> int:
        """Load the checkpoint's weights, optimizer moments and generator states; its step. (The batches need
        no state: each is drawn from (seed, rank, step).)"""
        self.model.load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])  # moves the moments to the weights' device
        self.precision.load_state_dict(state.get("grad_scaler"))
        restore_rng_states(state["rng"])
        step = int(state["step"])
        self.best = float(state["validation"].get("best_bits_per_token", math.inf))
        self.elapsed = float(state["run"].get("elapsed_seconds", 0.0))
        log.info("resuming %s at step %d", self.out, step)
        return step

    def fit(self, until_step: int | None = None) -> int:
        """Train until ``until_step`` (default and at most ``train.max_steps``); the step reached."""
        train, run = self.config.train, self.training_run
        stop = min(train.max_steps, until_step if until_step is not None else train.max_steps)
        bar = progress_bar(
            total=train.max_steps,
            initial=run.step,
            disable=not self.progress,
            unit="step",
            dynamic_ncols=True,
        )
        window = _Window()
        self.model.train()
        threads = torch.get_num_threads()
        if train.num_threads:
            torch.set_num_threads(train.num_threads)
        try:
            with run.stoppable():
                while run.step < stop:
                    started = time.perf_counter()
                    result = self.train_step()
                    self.elapsed += time.perf_counter() - started
                    window.add(result)
                    bar.update(1)
                    if run.due(train.log_every, train.max_steps):
                        self._log_train(window, result)
                        bar.set_postfix(
                            bits=f"{window.bits:.3f}",
                            valid="-" if self.last_valid is None else f"{self.last_valid:.3f}",
                        )
                        window = _Window()
                    validating = self.validation is not None and self.context.is_main
                    if validating and run.due(train.validate_every, train.max_steps):
                        self._validate()
                    if run.due(train.checkpoint_every, stop):
                        run.save()
                    run.stop_if_asked()
        finally:
            torch.set_num_threads(threads)
            bar.close()
            if self.run_log is not None:
                self.run_log.close()
        if self.context.is_main and (self.validation is None or not (self.out / WEIGHTS_FILE).is_file()):
            self._release(self.last_valid)
        barrier()  # the release model is written before any process reads it
        return run.step

    def train_step(self) -> StepResult:
        """One optimizer update on a batch of random windows; advances the step."""
        train, step = self.config.train, self.training_run.step
        learning_rate = learning_rate_at(step, train)
        set_learning_rate(self.optimizer, learning_rate)
        seed_step(train.seed, self.context.rank, step)  # dropout: the same draws when the step is redone
        batch = self.sampler.sample(step)
        codes, mask = batch.codes.to(self.device), batch.mask.to(self.device)
        conditions = None if batch.conditions is None else batch.conditions.to(self.device)
        with self.precision.autocast():
            loss = window_loss(self.network, codes, mask, conditions)
        self.optimizer.zero_grad(set_to_none=True)
        self.precision.backward(loss)
        self.precision.unscale(self.optimizer)  # clip the true gradients, not the fp16-scaled ones
        grad_norm = float(nn.utils.clip_grad_norm_(self.model.parameters(), train.grad_clip))
        with self.training_run.updating():
            self.precision.step(self.optimizer)  # fp16: skipped when the gradients overflowed
            self.precision.update()
            self.training_run.step += 1
        return StepResult(float(loss.detach()), learning_rate, grad_norm, int(batch.mask.sum()))

    def _log_train(self, window: _Window, result: StepResult) -> None:
        self._record(
            {
                "step": self.training_run.step,
                "split": "train",
                "bits_per_token": window.bits,
                "learning_rate": result.learning_rate,
                "grad_norm": result.grad_norm,
                "precision": self.config.train.precision,
                # all processes' frames (rank 0's batches stand for the others')
                "frames_per_second": window.frames
                * self.context.world_size
                / max(time.perf_counter() - window.start, 1e-9),
            }
        )

    def _validate(self) -> None:
        """Bits per token on the held-out corpus; a new best (or any, without keep_best) is released."""
        assert self.validation is not None
        step = self.training_run.step
        totals = corpus_nll(self.model, self.validation)
        bits = float(totals.nats.sum() / math.log(2) / (totals.num_frames * self.model.num_codebooks))
        per_codebook = [float(x) for x in totals.nats / math.log(2) / totals.num_frames]
        self._record(
            {"step": step, "split": "valid", "bits_per_token": bits, "bits_per_codebook": per_codebook}
        )
        assert self.run_log is not None  # rank 0
        for codebook, value in enumerate(per_codebook, start=1):
            self.run_log.scalar(f"valid/bits_per_token_codebook_{codebook}", value, step)
        if bits < self.best or not self.config.train.keep_best:
            self.best = min(self.best, bits)
            self.last_valid = bits
            self._release(bits)

    def _record(self, row: dict[str, Any]) -> None:
        """One metrics.jsonl row ``{"step", "split", ...}`` and its numbers as ``split/name`` scalars (rank 0)."""
        if self.run_log is None:
            return
        self.run_log.append(row)
        for key, value in row.items():
            if key not in ("step", "split") and isinstance(value, (int, float)):
                self.run_log.scalar(f"{row['split']}/{key}", value, row["step"])

    def _write_checkpoint(self) -> None:
        if self.validation is None:  # no validation to pick the best: release the latest weights
            self._release(None)
        step = self.training_run.step
        save_checkpoint(
            self.folder.checkpoint_path,
            {
                "step": step,
                "config": to_dict(self.config),
                "model": clean_state_dict(self.model.state_dict()),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": {"step": step},
                "rng": rng_states(),
                "sampler": {"seed": self.sampler.seed, "step": step},
                "run": {**self.run, "elapsed_seconds": self.elapsed},
                "grad_scaler": self.precision.state_dict(),  # empty unless fp16
                "validation": {"best_bits_per_token": self.best} if math.isfinite(self.best) else {},
            },
        )

    def _release(self, valid_bits: float | None) -> None:
        training = {
            **self.run,
            "step": self.training_run.step,
            "valid_bits_per_token": valid_bits,
            "elapsed_seconds": round(self.elapsed, 1),
        }
        model = copy.deepcopy(self.model).cpu()  # the training model stays where it is, in training mode
        Prior(model, self.config, self.stream, self.speakers, training).save(self.out)


class _Window:
    """Running sums of the training metrics since the last log step."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.frames, self.nats, self.steps = 0, 0.0, 0

    def add(self, result: StepResult) -> None:
        self.frames += result.frames
        self.nats += result.nats
        self.steps += 1

    @property
    def bits(self) -> float:
        """Mean bits per token."""
        return self.nats / self.steps / math.log(2)


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
