"""The tokenizer's training loop: random crops -> VQ-VAE -> reconstruction + quantizer losses -> AdamW.

SoundStream / EnCodec-style codec training (Zeghidour et al., 2021, https://arxiv.org/abs/2107.03312;
Défossez et al., 2022, https://arxiv.org/abs/2210.13438): multi-resolution spectral and mel losses, optional
adversarial training (``loss.adversarial_weight > 0``: multi-period and STFT discriminators with their own
AdamW, least-squares GAN + feature matching, from ``loss.adversarial_start_step``), codebooks of the recipe's
kind (EMA VQ with k-means initialisation and dead-code restarts, Gumbel-softmax with an annealed temperature,
or FSQ), AdamW with linear warm-up and cosine decay
(vqaudio.training.schedule), gradient clipping, periodic validation on whole utterances, and checkpoints.

A run lives in one folder ``OUT``::

    OUT/checkpoint.pt       training state (vqaudio.training.checkpoint), to resume
    OUT/model.safetensors   the release model (+ config.json), refreshed at every checkpoint:
    OUT/config.json           `vqaudio tokenize --model OUT` works while training runs
    OUT/metrics.jsonl       one JSON object per log step and validation (vqaudio.training.logs)
    OUT/tensorboard/        TensorBoard events: losses, codebook usage/perplexity, audio, spectrograms

Exact resume: every step's randomness (crops, quantizer dropout, k-means seeds, dead-code restarts, Gumbel
noise) comes from generators seeded by ``(seed, rank, step)``, the learning rate and the Gumbel temperature
are functions of the step, and the checkpoint
holds the model, the optimizer and the step, so a run stopped and resumed ends with the same weights as an
uninterrupted one (tests/test_training.py checks this), on any number of processes. The global generator
states are stored and restored too.

Ctrl-C (SIGINT) or SIGTERM stops after the current step and writes a checkpoint; a second Ctrl-C stops at
once (a checkpoint is still written unless the optimizer was halfway through an update).

The run folder and its overwrite/resume rules, the checkpoint cadence, stopping on signals, the logs, the
schedule and the parameter groups are vqaudio.training's (shared with the prior's trainer); this module holds
the codec's step (generator + optional discriminator) and its validation; what a run may change about the
weights it starts from (--init-from, freezing, resuming) is vqaudio.codec.fine_tuning's.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.contrib.logging import logging_redirect_tqdm

from vqaudio.codec.discriminators import Discriminators, Judgement
from vqaudio.codec.fine_tuning import (
    freeze,
    initialise_from,
    keep_frozen_in_eval,
    resumed_config,
    same_architecture,
    warn_about_changed_data,
)
from vqaudio.codec.istft import ISTFTHead
from vqaudio.codec.losses import (
    ReconstructionLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    mel_distance,
)
from vqaudio.codec.pitch import estimate_pitch
from vqaudio.codec.quantization import GumbelQuantizer
from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.codec.validation import VALIDATION_BATCH_FACTOR, ValidationSet, validate
from vqaudio.codec.vqvae import VQVAE, ModelOutput, build_model
from vqaudio.config import Config, ConfigError, to_dict
from vqaudio.data.augment import Augmentation
from vqaudio.data.crops import RandomCrops, cache_size_bytes
from vqaudio.data.phone_labels import IGNORE, NUM_PHONES, LabelledCrops, PhoneLabels
from vqaudio.data.utterance import Utterance
from vqaudio.devices import resolve_device
from vqaudio.errors import InputError, VQAudioError
from vqaudio.evaluation.codebook_stats import CodebookUsage
from vqaudio.io.model_file import CONFIG_FILE, WEIGHTS_FILE, clean_state_dict
from vqaudio.progress import progress_bar
from vqaudio.training.checkpoint import CHECKPOINT_FILE, restore_rng_states, rng_states, save_checkpoint
from vqaudio.training.distributed import (
    SINGLE_PROCESS,
    DistributedContext,
    standardise_parameter_strides,
    wrap_for_ddp,
)
from vqaudio.training.logs import METRICS_FILE, TENSORBOARD_DIR, RunLog
from vqaudio.training.precision import MixedPrecision
from vqaudio.training.run import RunFolder, TrainingRun, parameter_groups, seed_step, set_learning_rate
from vqaudio.training.schedule import learning_rate_at

log = logging.getLogger(__name__)

PREFETCH_BATCHES = 4  # batches each DataLoader worker prepares ahead (torch's default is 2)

RUN_FILES = (
    CHECKPOINT_FILE,
    METRICS_FILE,
    TENSORBOARD_DIR,
    WEIGHTS_FILE,
    CONFIG_FILE,
)  # what --overwrite removes
RUN_REFUSAL = (  # RunFolder's message for a run that would be replaced
    "{out} already holds a training run ({existing}) and {why}; choose another --out or pass --overwrite to "
    "start over"
)


class TrainingDivergedError(VQAudioError):
    """The gradients became NaN or Inf."""


class StepResult(NamedTuple):
    """One optimizer update: weighted loss terms (floats), per-codebook commitment losses [K], the gradient
    norm before clipping, the learning rate used, and the batch's codes [B, K, F] and audio [B, T] (detached).
    """

    loss: float
    waveform_l1: float
    stft: float
    mel: float
    envelope: float
    quantizer: float
    pitch: float  # 0 without the harmonic excitation's pitch loss
    phone: float  # 0 without the phone loss (as the two below)
    phone_correct: int  # labelled frames whose phone the phone head got right
    phone_frames: int  # labelled frames in the batch
    adversarial: float  # 0 without discriminators (as the two below)
    feature_matching: float
    discriminator: float  # the discriminators' own loss
    commitment: Tensor
    grad_norm: float
    learning_rate: float
    codes: Tensor
    reconstruction: Tensor
    target: Tensor


class TrainResult(NamedTuple):
    """What ``train_tokenizer`` did.

    out: the run folder (the release model is there).
    step: optimizer updates done in all (including before a resume).
    start_step: the step this call started from (0, or the checkpoint's).
    validation: the latest validation metrics (empty without a validation set).
    audio_seconds_per_second: seconds of audio trained per wall-clock second in this call (all processes).
    """

    out: Path
    step: int
    start_step: int
    validation: dict[str, Any]
    audio_seconds_per_second: float


def train_tokenizer(
    config: Config,
    train_utterances: Sequence[Utterance],
    valid_utterances: Sequence[Utterance],
    out: str | Path,
    *,
    run: dict[str, Any] | None = None,
    init_from: str | Path | None = None,
    resume: bool = True,
    overwrite: bool = False,
    until_step: int | None = None,
    device: str | torch.device = "cpu",
    context: DistributedContext = SINGLE_PROCESS,
    progress: bool = True,
    skip_bad: bool = False,
    phone_alignments: Sequence[str | Path] = (),
) -> TrainResult:
    """Train a tokenizer in ``out`` (see the module docstring for the files), or resume the run there.

    Args:
        config: the recipe; on resume its ``model`` section must equal the checkpoint's (the architecture is
            read back from the checkpoint), while changed ``train``/``loss`` settings are used and listed.
        train_utterances: the training corpus, with lengths (``load_corpus(..., read_headers=True)``).
        valid_utterances: whole utterances to validate on (may be empty: no validation).
        out: the run folder.
        run: facts recorded in the release model's ``training`` metadata (``data``, ``valid``, ``recipe``,
            ``overrides``).
        init_from: a released tokenizer (folder or ``.safetensors``) whose weights a new run starts from
            (fine-tuning; its architecture must equal the recipe's); ignored when resuming a checkpoint.
        resume: continue from ``out/checkpoint.pt`` when there is one.
        overwrite: allow replacing a run in ``out`` (another architecture, or ``resume=False``).
        until_step: stop after this many updates (default ``train.max_steps``) without changing the learning
            rate schedule, which always runs to ``max_steps``: stopping and resuming equals one run.
        device: where to train: auto, cpu, cuda or cuda:N (``vqaudio.devices.resolve_device``); under DDP
            with CUDA this process's GPU (``vqaudio.training.distributed.process_device``).
        context: this process's place under ``torchrun`` (``vqaudio.training.distributed.init_distributed``).
        progress: show a progress bar (rank 0 only).
        skip_bad: skip audio files that fail to decode (``RandomCrops``, ``ValidationSet``) instead of stopping.
        phone_alignments: ``vqaudio align`` folders labelling some training utterances with phones, for the
            phone loss (``loss.phone_weight``; vqaudio.data.phone_labels).
    Returns:
        TrainResult.
    Raises:
        FileExistsError: ``out`` holds another run and ``overwrite`` is False.
        ConfigError: the recipe's architecture differs from the checkpoint's.
        TrainingDivergedError: NaN/Inf gradients (the last checkpoint is kept as it was).
        KeyboardInterrupt: after Ctrl-C / SIGTERM, once the checkpoint is written.
    """
    trainer = Trainer(
        config,
        train_utterances,
        valid_utterances,
        out,
        run=run,
        init_from=init_from,
        resume=resume,
        overwrite=overwrite,
        device=device,
        context=context,
        progress=progress,
        skip_bad=skip_bad,
        phone_alignments=phone_alignments,
    )
    try:
        return trainer.fit(until_step)
    finally:
        trainer.close()


class Trainer:
    """State and steps of one training run; ``train_tokenizer`` is the usual way in (same arguments)."""

    def __init__(
        self,
        config: Config,
        train_utterances: Sequence[Utterance],
        valid_utterances: Sequence[Utterance],
        out: str | Path,
        *,
        run: dict[str, Any] | None = None,
        init_from: str | Path | None = None,
        resume: bool = True,
        overwrite: bool = False,
        device: str | torch.device = "cpu",
        context: DistributedContext = SINGLE_PROCESS,
        progress: bool = True,
        skip_bad: bool = False,
        phone_alignments: Sequence[str | Path] = (),
    ) -> None:
        self.out = Path(out)
        self.skip_bad = skip_bad
        self.context = context
        self.device = resolve_device(device)  # auto, cpu, cuda, cuda:N (checked)
        # before the run folder is touched: fp16 on the CPU is a ConfigError (a resumed run keeps the
        # recipe's train settings, so this is the run's precision)
        self.precision = MixedPrecision(config.train.precision, self.device)
        check_phone_loss(config, phone_alignments)
        self.progress = progress and context.is_main
        self.run = dict(run or {})
        if config.loss.phone_weight > 0:
            self.run["phones"] = [str(folder) for folder in phone_alignments]
        self.folder = RunFolder(self.out, RUN_FILES, RUN_REFUSAL)
        checkpoint = self.folder.open(
            resume=resume,
            overwrite=overwrite,
            resumable=lambda checkpoint: same_architecture(checkpoint, config, self.out, overwrite),
            context=context,
        )
        if checkpoint is not None:
            config = resumed_config(checkpoint, config, self.out)
        self.config = config
        if config.train.num_threads > 0:
            torch.set_num_threads(config.train.num_threads)
        self._build_networks()
        self.validation: dict[str, Any] = {}
        step = 0
        if checkpoint is not None:
            step = self._restore(checkpoint)
        elif init_from is not None:
            self.run["init_from"] = initialise_from(self.model, config, init_from)
        self.training_run = TrainingRun(
            self.folder, self._write_checkpoint, step, resumed=checkpoint is not None, context=context
        )
        self.network: nn.Module = self.model
        self.discriminator_network: nn.Module | None = self.discriminators
        self.phone_network: nn.Module | None = self.phone_head
        if context.is_distributed:
            self.network = wrap_for_ddp(self.model, self.device)
            if self.discriminators is not None:
                self.discriminator_network = wrap_for_ddp(self.discriminators, self.device)
            if self.phone_head is not None:
                self.phone_network = wrap_for_ddp(self.phone_head, self.device)
        cache, cache_bytes = self._build_data(train_utterances, valid_utterances, phone_alignments)
        self.run_log: RunLog | None = None
        if context.is_main:
            self.run_log = RunLog(self.out, self.start_step, config.model.sample_rate)
            self._describe(cache, cache_bytes, checkpoint is not None)

    @property
    def step(self) -> int:
        """Optimizer updates done (including before a resume)."""
        return self.training_run.step

    @step.setter
    def step(self, value: int) -> None:
        self.training_run.step = value

    @property
    def start_step(self) -> int:
        """The step this run started from (0, or the checkpoint's)."""
        return self.training_run.start_step

    def _build_networks(self) -> None:
        """The VQ-VAE with its loss and optimizer; with adversarial training the discriminators and theirs;
        with the phone loss the phone head and its optimizer."""
        config, train = self.config, self.config.train
        # The same initial weights on every rank (DDP also broadcasts rank 0's).
        torch.manual_seed(train.seed)
        self.model: VQVAE = build_model(config.model).to(self.device)
        standardise_parameter_strides(self.model)
        freeze(self.model, train.freeze)
        self.loss = ReconstructionLoss(config.loss, config.model.sample_rate).to(self.device)
        envelope_loss = self.loss.envelope_loss
        if envelope_loss is not None and train.segment_seconds < envelope_loss.min_seconds:
            raise ConfigError(
                f"loss.envelope_weight needs crops of at least {envelope_loss.min_seconds:.2f} s (one 384 ms "
                f"segment), got train.segment_seconds={train.segment_seconds}; raise it or set the weight to 0"
            )
        self.optimizer = torch.optim.AdamW(
            parameter_groups(self.model, train.weight_decay), lr=train.learning_rate, betas=train.betas
        )
        self.discriminators: Discriminators | None = None
        self.discriminator_optimizer: torch.optim.Optimizer | None = None
        if config.loss.adversarial_weight > 0 or config.loss.feature_matching_weight > 0:
            self.discriminators = Discriminators(config.loss.discriminator).to(self.device)
            standardise_parameter_strides(self.discriminators)
            self.discriminator_optimizer = torch.optim.AdamW(
                parameter_groups(self.discriminators, train.weight_decay),
                lr=train.discriminator_learning_rate or train.learning_rate,
                betas=train.betas,
            )
        # The phone loss's classifier: trained with the model, never part of the release model.
        self.phone_head: nn.Linear | None = None
        self.phone_optimizer: torch.optim.Optimizer | None = None
        if config.loss.phone_weight > 0:
            self.phone_head = nn.Linear(config.model.latent_dim, NUM_PHONES).to(self.device)
            self.phone_optimizer = torch.optim.AdamW(
                parameter_groups(self.phone_head, train.weight_decay),
                lr=train.learning_rate,
                betas=train.betas,
            )

    def _restore(self, checkpoint: dict[str, Any]) -> int:
        """Load the checkpoint's weights, optimizer moments, generator states and validation; its step."""
        self.model.load_state_dict(checkpoint["model"], strict=True)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self._restore_discriminators(checkpoint.get("discriminators"))
        self._restore_phone_head(checkpoint.get("phone_head"))
        self.precision.load_state_dict(checkpoint.get("grad_scaler"))
        restore_rng_states(checkpoint["rng"])
        self.validation = dict(checkpoint["validation"])
        warn_about_changed_data(checkpoint["run"], self.run)
        trained_on = int(checkpoint["run"].get("world_size") or 1)
        if trained_on != self.context.world_size and self.context.is_main:
            log.warning(
                "resuming with %d process(es) a run trained with %d: a step now trains %d x %d crops instead "
                "of %d x %d (train.batch_size is per process; the learning rate is not rescaled)",
                self.context.world_size,
                trained_on,
                self.context.world_size,
                self.config.train.batch_size,
                trained_on,
                self.config.train.batch_size,
            )
        if checkpoint["run"].get("init_from"):  # a resumed fine-tuning run still says where it began
            self.run["init_from"] = checkpoint["run"]["init_from"]
        return int(checkpoint["step"])

    def _build_data(
        self,
        train_utterances: Sequence[Utterance],
        valid_utterances: Sequence[Utterance],
        phone_alignments: Sequence[str | Path],
    ) -> tuple[bool, int]:
        """The training crops (with their phone labels for the phone loss) and the validation set; whether the
        decoded audio is cached, and its size."""
        train, sample_rate = self.config.train, self.config.model.sample_rate
        self.segment_samples = max(1, round(train.segment_seconds * sample_rate))
        cache_bytes = cache_size_bytes(train_utterances, sample_rate)
        cache = 0 < cache_bytes <= train.audio_cache_mb * 2**20
        self.crops = RandomCrops(
            train_utterances,
            sample_rate,
            self.segment_samples,
            train.batch_size,
            seed=train.seed,
            rank=self.context.rank,
            cache=cache,
            progress=self.progress,
            augmentation=Augmentation(train.speed_perturbation, train.gain_perturbation_db),
            skip_bad=self.skip_bad,
        )
        self.batches: Dataset[Any] = self.crops
        self.phone_labels: PhoneLabels | None = None
        if self.phone_head is not None:
            self.phone_labels = PhoneLabels(phone_alignments, self.crops.ids)
            self.batches = LabelledCrops(self.crops, self.phone_labels, self.config.model.hop_length)
        elif phone_alignments and self.context.is_main:
            log.warning("--phones is ignored: the recipe has no phone loss (loss.phone_weight is 0)")
        self.validation_set = ValidationSet(
            valid_utterances,
            sample_rate,
            max_batch_size=train.batch_size,
            max_batch_samples=VALIDATION_BATCH_FACTOR * train.batch_size * self.segment_samples,
            skip_bad=self.skip_bad,
            context=self.context,
        )
        self.run.update(
            world_size=self.context.world_size,
            train_utterances=self.crops.num_utterances,
            train_hours=round(self.crops.seconds / 3600, 4),
            valid_utterances=len(self.validation_set),
            valid_hours=round(self.validation_set.seconds / 3600, 4),
        )
        return cache, cache_bytes

    # ----------------------------------------------------------------------------------------------
    # The loop
    # ----------------------------------------------------------------------------------------------
    def fit(self, until_step: int | None = None) -> TrainResult:
        """Train until ``until_step`` (default ``train.max_steps``); see ``train_tokenizer``."""
        train = self.config.train
        stop = train.max_steps if until_step is None else until_step
        if not 0 <= stop <= train.max_steps:
            raise InputError(
                f"until_step must be between 0 and train.max_steps={train.max_steps}, got {until_step}; "
                "raise train.max_steps (--max-steps) to train longer"
            )
        if self.step >= stop:
            log.info(
                "the run in %s is already at step %d (of %d); nothing to train", self.out, self.step, stop
            )
            return self._result(0.0)
        if self.step == 0 and len(self.validation_set) and self.validation.get("step") != 0:
            self._validate()  # the baseline: what the untrained model does
        window = _Window(self.model.num_codebooks, self.model.codebook_size)
        total_seconds = total_audio = total_waited = 0.0
        loader = DataLoader(
            self.batches,
            batch_size=None,
            sampler=range(self.step, stop),
            num_workers=train.num_workers,
            prefetch_factor=PREFETCH_BATCHES if train.num_workers else None,
            # page-locked batches: the copy to the GPU overlaps the step
            pin_memory=self.device.type == "cuda",
            # its own generator: creating the loader must not draw from the global torch generator
            generator=torch.Generator().manual_seed(train.seed),
        )
        bar = progress_bar(
            total=stop, initial=self.step, desc="training", unit="step", disable=not self.progress
        )
        run = self.training_run
        try:
            with logging_redirect_tqdm(), run.stoppable():
                batches = iter(loader)
                while self.step < stop:
                    started = time.perf_counter()
                    batch, labels = _audio_and_labels(next(batches))
                    waited = time.perf_counter() - started
                    seed_step(train.seed, self.context.rank, self.step)
                    result = self.train_step(batch, labels)
                    elapsed = time.perf_counter() - started
                    audio_seconds = batch.shape[0] * batch.shape[1] / self.config.model.sample_rate
                    window.add(result, elapsed, waited, audio_seconds * self.context.world_size)
                    total_seconds += elapsed
                    total_waited += waited
                    total_audio += audio_seconds * self.context.world_size
                    bar.update(1)
                    bar.set_postfix(window.postfix(result), refresh=False)
                    if run.due(train.log_every, stop):
                        self._log_train(window, result)
                    if len(self.validation_set) and run.due(train.validate_every, stop):
                        self._validate()
                    if run.due(train.checkpoint_every, stop):
                        run.save()
                    run.stop_if_asked()
        finally:
            bar.close()
        speed = total_audio / total_seconds if total_seconds else 0.0
        if self.context.is_main:
            log.info(
                "trained %d steps (to step %d of %d): %.1f s of audio per second, %.0f%% of the time waiting "
                "for data; release model: %s",
                self.step - self.start_step,
                self.step,
                train.max_steps,
                speed,
                100 * total_waited / total_seconds if total_seconds else 0.0,
                self.out,
            )
        return self._result(speed)

    def train_step(self, batch: Tensor, phone_labels: Tensor | None = None) -> StepResult:
        """One optimizer update on ``batch`` [B, T] (with the phone loss, its labels [B, F]); advances
        ``self.step``."""
        loss_config, train = self.config.loss, self.config.train
        self.network.train()
        keep_frozen_in_eval(self.model, train.freeze)
        self.optimizer.zero_grad(set_to_none=True)
        if self.phone_optimizer is not None:
            self.phone_optimizer.zero_grad(set_to_none=True)
        learning_rate = learning_rate_at(self.step, train)
        set_learning_rate(self.optimizer, learning_rate)
        # schedules of the codebooks (the Gumbel temperature) follow the global step, as the learning rate does
        self.model.quantizer.set_training_step(self.step)
        target = batch.to(self.device, non_blocking=True)
        with self.precision.autocast():  # the losses turn autocast off for their spectra
            output = self.network(target)
            terms = self.loss(output.audio, target)
        quantizer_loss = loss_config.quantizer_weight * output.quantizer.loss
        zero = terms.total.new_zeros(())
        pitch = zero
        if loss_config.pitch_weight > 0 and output.log_f0 is not None:
            pitch = loss_config.pitch_weight * self._pitch_loss(output.log_f0.float(), target)
        phone, phone_correct, phone_frames = zero, 0, 0
        if self.phone_network is not None:
            if phone_labels is None:
                raise InputError("the phone loss needs the batch's phone labels (LabelledCrops)")
            phone, phone_correct, phone_frames = self._phone_loss(output, phone_labels)
            phone = loss_config.phone_weight * phone
        adversarial = feature_matching = discriminator = zero
        if self.discriminators is not None and self.step >= loss_config.adversarial_start_step:
            # The discriminators learn first, on this batch; the decoder is then judged by the updated ones.
            discriminator, real = self._discriminator_step(target, output.audio.detach(), learning_rate)
            with self.precision.autocast():
                fake = self._judge_without_weight_gradients(output.audio)
            fake = _float32(fake)
            adversarial = loss_config.adversarial_weight * generator_adversarial_loss(fake)
            feature_matching = loss_config.feature_matching_weight * feature_matching_loss(real, fake)
        total = terms.total + quantizer_loss.float() + pitch + phone + adversarial + feature_matching
        self.precision.backward(total)
        self.precision.unscale(self.optimizer)  # clip the true gradients, not the fp16-scaled ones
        max_norm = train.grad_clip if train.grad_clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        # After DDP's all-reduce every rank sees the same gradients, so every rank stops here together.
        # Under fp16 an overflow is the scaler's to handle: it skips the update and lowers the scale.
        if not math.isfinite(grad_norm) and not self.precision.scaling:
            raise TrainingDivergedError(
                f"the gradients became {grad_norm} at step {self.step + 1} "
                f"(loss {float(total.detach()):.4g}); "
                "lower train.learning_rate or raise train.warmup_steps, then resume from the last checkpoint"
            )
        if self.phone_optimizer is not None:
            set_learning_rate(self.phone_optimizer, learning_rate)
            self.precision.unscale(self.phone_optimizer)
        with self.training_run.updating():
            self.precision.step(self.optimizer)
            if self.phone_optimizer is not None:
                self.precision.step(self.phone_optimizer)
            self.precision.update()  # once per step, after the discriminators' optimizer too
            self.step += 1
        return StepResult(
            loss=float(total.detach()),
            waveform_l1=float(terms.waveform_l1.detach()),
            stft=float(terms.stft.detach()),
            mel=float(terms.mel.detach()),
            envelope=float(terms.envelope.detach()),
            quantizer=float(quantizer_loss.detach()),
            pitch=float(pitch.detach()),
            phone=float(phone.detach()),
            phone_correct=phone_correct,
            phone_frames=phone_frames,
            adversarial=float(adversarial.detach()),
            feature_matching=float(feature_matching.detach()),
            discriminator=float(discriminator.detach()),
            commitment=output.quantizer.commitment_loss.detach().cpu(),
            grad_norm=grad_norm,
            learning_rate=learning_rate,
            codes=output.codes[:, self.model.pitch_rows :].detach(),  # the codebooks (no pitch row)
            reconstruction=output.audio.detach(),
            target=target,
        )

    def _phone_loss(self, output: ModelOutput, labels: Tensor) -> tuple[Tensor, int, int]:
        """Cross-entropy of the labelled frames' phones predicted from their first-codebook vectors, with a
        straight-through gradient to the encoder's latent (the code vectors follow by their own updates); also the
        frames predicted right and the frames labelled."""
        assert self.phone_network is not None
        first = output.codes[:, self.model.pitch_rows : self.model.pitch_rows + 1]  # [B, 1, F]
        with torch.no_grad():
            vectors = self.model.quantizer.decode(first)  # [B, D, F]
        latent = output.latent.float()
        straight_through = latent + (vectors.float() - latent).detach()
        logits = self.phone_network(straight_through.transpose(1, 2)).float()  # [B, F, phones]
        labels = labels.to(self.device, non_blocking=True)
        frames = min(logits.shape[1], labels.shape[1])
        logits, labels = logits[:, :frames].reshape(-1, logits.shape[-1]), labels[:, :frames].reshape(-1)
        labelled = labels != IGNORE
        count = int(labelled.sum())
        loss = torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="sum")
        correct = int((logits.detach().argmax(-1) == labels)[labelled].sum())
        return loss / max(count, 1), correct, count

    def _pitch_loss(self, log_f0: Tensor, target: Tensor) -> Tensor:
        """Mean |predicted - estimated| log-F0 over the voiced frames of ``target`` (0 when none is voiced)."""
        head = self.model.decoder.head
        assert isinstance(head, ISTFTHead)
        with torch.no_grad():
            padded = torch.nn.functional.pad(
                target, (0, log_f0.shape[-1] * head.hop_length - target.shape[-1])
            )
            reference = estimate_pitch(head.frames(padded), self.config.model.sample_rate)
        voiced = reference.voiced.to(log_f0.dtype)
        error = (log_f0 - reference.f0.log()).abs() * voiced
        return error.sum() / voiced.sum().clamp(min=1.0)

    def _discriminator_step(
        self, real_audio: Tensor, fake_audio: Tensor, generator_learning_rate: float
    ) -> tuple[Tensor, list[Judgement]]:
        """One update of the discriminators on real vs detached decoded audio.

        Returns the discriminators' loss and their judgement of the real audio (detached; the feature-matching
        targets of the decoder's update).
        """
        assert self.discriminator_network is not None and self.discriminator_optimizer is not None
        train = self.config.train
        scale = (train.discriminator_learning_rate or train.learning_rate) / train.learning_rate
        set_learning_rate(self.discriminator_optimizer, generator_learning_rate * scale)
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        with self.precision.autocast():  # one pass for real and fake
            both = _float32(self.discriminator_network(torch.cat([real_audio, fake_audio])))
        batch = real_audio.shape[0]
        real = [Judgement(j.logits[:batch], [f[:batch] for f in j.features]) for j in both]
        fake = [Judgement(j.logits[batch:], [f[batch:] for f in j.features]) for j in both]
        loss = discriminator_loss(real, fake)
        self.precision.backward(loss)
        self.precision.unscale(self.discriminator_optimizer)
        max_norm = train.grad_clip if train.grad_clip > 0 else math.inf
        assert self.discriminators is not None
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.discriminators.parameters(), max_norm))
        if not math.isfinite(grad_norm) and not self.precision.scaling:
            raise TrainingDivergedError(
                f"the discriminators' gradients became {grad_norm} at step {self.step + 1}; lower "
                "train.discriminator_learning_rate, then resume from the last checkpoint"
            )
        with self.training_run.updating():
            self.precision.step(self.discriminator_optimizer)
        detached = [Judgement(j.logits.detach(), [f.detach() for f in j.features]) for j in real]
        return loss.detach(), detached

    def _judge_without_weight_gradients(self, audio: Tensor) -> list[Judgement]:
        """The discriminators on the decoder's output, letting gradients reach the audio but not their
        weights (the plain module, so DDP does not expect a second gradient reduction)."""
        assert self.discriminators is not None
        parameters = list(self.discriminators.parameters())
        for parameter in parameters:
            parameter.requires_grad_(False)
        try:
            return self.discriminators(audio)
        finally:
            for parameter in parameters:
                parameter.requires_grad_(True)

    def _restore_discriminators(self, state: dict[str, Any] | None) -> None:
        if self.discriminators is None:
            return
        if state is None:
            log.info("the checkpoint has no discriminators: they start from scratch")
            return
        assert self.discriminator_optimizer is not None
        try:
            self.discriminators.load_state_dict(state["model"], strict=True)
        except RuntimeError as exc:
            raise ConfigError(
                f"{self.out / CHECKPOINT_FILE}: the checkpoint's discriminators differ from "
                f"loss.discriminator ({str(exc).splitlines()[0]}); keep the run's discriminator settings"
            ) from exc
        self.discriminator_optimizer.load_state_dict(state["optimizer"])

    def _restore_phone_head(self, state: dict[str, Any] | None) -> None:
        if self.phone_head is None:
            return
        if state is None:
            log.info("the checkpoint has no phone head: it starts from scratch")
            return
        assert self.phone_optimizer is not None
        self.phone_head.load_state_dict(state["model"], strict=True)
        self.phone_optimizer.load_state_dict(state["optimizer"])

    def close(self) -> None:
        if self.run_log is not None:
            self.run_log.close()
            self.run_log = None

    # ----------------------------------------------------------------------------------------------
    # Logging, validation, checkpoints
    # ----------------------------------------------------------------------------------------------
    def _describe(self, cache: bool, cache_bytes: int, resumed: bool) -> None:
        train, crops = self.config.train, self.crops
        if resumed:
            log.info("resuming %s from step %d", self.out / CHECKPOINT_FILE, self.step)
        log.info(
            "training data: %d files, %s; crops of %.2f s, %d per step per process, %d process(es)",
            crops.num_utterances,
            _duration(crops.seconds),
            train.segment_seconds,
            train.batch_size,
            self.context.world_size,
        )
        if cache:
            log.info(
                "decoded the training audio into memory (%.0f MB, train.audio_cache_mb)", cache_bytes / 2**20
            )
        elif train.audio_cache_mb == 0:
            log.info("decoding each crop from its file (train.audio_cache_mb=0)")
        else:
            log.info(
                "decoding each crop from its file (the decoded corpus needs %.0f MB, over "
                "train.audio_cache_mb=%d)",
                cache_bytes / 2**20,
                train.audio_cache_mb,
            )
        if crops.augmentation is not None:
            log.info(
                "augmentation: speed x%.2f..%.2f, gain %+.0f..%+.0f dB per crop",
                *crops.augmentation.speed,
                *crops.augmentation.gain_db,
            )
        if self.phone_labels is not None:
            log.info(
                "phone loss (weight %g): %d of the %d training files have phone labels",
                self.config.loss.phone_weight,
                self.phone_labels.num_labelled,
                crops.num_utterances,
            )
        if crops.num_short:
            log.info(
                "%d training files shorter than a crop (%.2f s) are used whole, zero-padded at the end",
                crops.num_short,
                train.segment_seconds,
            )
        if len(self.validation_set):
            log.info(
                "validation: %d files, %s, every %d steps",
                len(self.validation_set),
                _duration(self.validation_set.seconds),
                train.validate_every,
            )
        else:
            log.info("validation: none (no validation files)")
        assert self.run_log is not None
        log.info("metrics: %s", self.run_log.metrics_path)
        log.info("tensorboard: tensorboard --logdir %s", self.run_log.tensorboard_path)

    def _log_train(self, window: _Window, result: StepResult) -> None:
        if self.run_log is not None:
            with torch.no_grad():
                distance = float(
                    mel_distance(result.reconstruction, result.target, self.config.model.sample_rate)
                )
            metrics = {**window.metrics(distance), "precision": self.config.train.precision}
            gumbel = [m for m in self.model.quantizer.modules() if isinstance(m, GumbelQuantizer)]
            if gumbel:  # the temperature the window's last step used (the same in every stage)
                metrics["gumbel_temperature"] = gumbel[0].temperature
            self.run_log.write("train", self.step, metrics)
            window.last_mel_distance = distance
        window.reset()

    def _validate(self) -> None:
        result = validate(
            self.model,
            self.validation_set,
            self.loss,
            self.config.loss.quantizer_weight,
            self.context,
        )
        self.validation = {"step": self.step, **result.metrics}
        if self.run_log is not None:
            self.run_log.write("valid", self.step, result.metrics)
            self.run_log.examples(self.step, result.examples)
            usage = result.metrics["codebook_usage"]
            assert isinstance(usage, list)
            log.info(
                "step %d validation: mel distance %.3f, loss %.3f, codebook usage min %.2f mean %.2f",
                self.step,
                result.metrics["mel_distance"],
                result.metrics["loss"],
                min(usage),
                sum(usage) / len(usage),
            )

    def _write_checkpoint(self) -> None:
        """Checkpoint and release model (``TrainingRun.save`` calls it on rank 0; no collectives)."""
        save_checkpoint(
            self.out / CHECKPOINT_FILE,
            {
                "step": self.step,
                "config": to_dict(self.config),
                "model": clean_state_dict(self.model.state_dict()),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": {"step": self.step},
                "rng": rng_states(),
                "sampler": {**self.crops.state(), "step": self.step},
                "run": self.run,
                "validation": self.validation,
                "grad_scaler": self.precision.state_dict(),  # empty unless fp16
                **(
                    {}
                    if self.phone_head is None
                    else {
                        "phone_head": {
                            "model": clean_state_dict(self.phone_head.state_dict()),
                            "optimizer": self.phone_optimizer.state_dict(),  # type: ignore[union-attr]
                        }
                    }
                ),
                **(
                    {}
                    if self.discriminators is None
                    else {
                        "discriminators": {
                            "model": clean_state_dict(self.discriminators.state_dict()),
                            "optimizer": self.discriminator_optimizer.state_dict(),  # type: ignore[union-attr]
                        }
                    }
                ),
            },
        )
        self._save_release()
        if self.run_log is not None:
            self.run_log.flush()

    def _save_release(self) -> None:
        training = {
            "steps": self.step,
            "max_steps": self.config.train.max_steps,
            "complete": self.step >= self.config.train.max_steps,
            "data": {
                "source": self.run.get("data"),
                "utterances": self.run["train_utterances"],
                "hours": self.run["train_hours"],
            },
            "valid": {
                "source": self.run.get("valid"),
                "utterances": self.run["valid_utterances"],
                "hours": self.run["valid_hours"],
            },
            "recipe": self.run.get("recipe"),
            "overrides": self.run.get("overrides", []),
            "init_from": self.run.get("init_from"),
            "seed": self.config.train.seed,
            "world_size": self.context.world_size,
            "precision": self.config.train.precision,
            "validation": self.validation,
        }
        # A copy: the Tokenizer puts its model in eval mode, and the training model must stay as it is.
        model = copy.deepcopy(self.model).cpu()
        Tokenizer(model, self.config, name=self.out.name, training=training).save(self.out)

    def _result(self, speed: float) -> TrainResult:
        return TrainResult(self.out, self.step, self.start_step, dict(self.validation), speed)


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------
class _Window:
    """Running means of the training metrics since the last log step, and the live codebook usage."""

    def __init__(self, num_codebooks: int, codebook_size: int) -> None:
        self.usage = CodebookUsage(num_codebooks, codebook_size)
        self.last_mel_distance: float | None = None  # of the last log step's batch
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.commitment: Tensor | None = None
        self.steps = 0
        self.seconds = self.waited = self.audio_seconds = 0.0
        self.phone_sum = 0.0  # phone losses of the steps with labelled frames
        self.phone_correct = self.phone_frames = self.phone_steps = 0
        self.usage.reset()

    def add(self, result: StepResult, seconds: float, waited: float, audio_seconds: float) -> None:
        names: tuple[str, ...] = ("loss", "waveform_l1", "stft", "mel", "quantizer", "grad_norm")
        if result.envelope:
            names += ("envelope",)
        if result.pitch:
            names += ("pitch",)
        if result.phone_frames:  # averaged over the steps with labelled frames (metrics)
            self.phone_sum += result.phone
            self.phone_correct += result.phone_correct
            self.phone_frames += result.phone_frames
            self.phone_steps += 1
        if result.discriminator:
            names += ("adversarial", "feature_matching", "discriminator")
        for name in names:
            self.sums[name] = self.sums.get(name, 0.0) + getattr(result, name)
        commitment = result.commitment.double()
        self.commitment = commitment if self.commitment is None else self.commitment + commitment
        self.usage.update(result.codes)
        self.steps += 1
        self.seconds += seconds
        self.waited += waited
        self.audio_seconds += audio_seconds

    @property
    def speed(self) -> float:
        return self.audio_seconds / self.seconds if self.seconds else 0.0

    def postfix(self, result: StepResult) -> dict[str, str]:
        """loss of this step, mel distance of the last log step, codebook usage min/mean since the last log
        step, and seconds of audio trained per second."""
        usage = self.usage.summary().usage
        distance = self.last_mel_distance
        return {
            "loss": f"{result.loss:.3f}",
            "mel_dist": "-" if distance is None else f"{distance:.3f}",
            "use": f"{float(usage.min()):.2f}/{float(usage.mean()):.2f}",
            "audio_s/s": f"{self.speed:.1f}",
        }

    def metrics(self, mel_distance_value: float) -> dict[str, Any]:
        steps = max(1, self.steps)
        summary = self.usage.summary()
        assert self.commitment is not None
        return {
            **{name: value / steps for name, value in self.sums.items()},
            "commitment": (self.commitment / steps).tolist(),
            "mel_distance": mel_distance_value,
            "codebook_usage": summary.usage.tolist(),
            "perplexity": summary.perplexity.tolist(),
            "audio_seconds_per_second": self.speed,
            "data_wait_fraction": self.waited / self.seconds if self.seconds else 0.0,
            "window_steps": self.steps,
            **(
                {
                    "phone": self.phone_sum / self.phone_steps,
                    "phone_accuracy": self.phone_correct / self.phone_frames,
                }
                if self.phone_frames
                else {}
            ),
        }


def check_phone_loss(config: Config, phone_alignments: Sequence[str | Path]) -> None:
    """The phone loss needs labels and a residual quantizer (a group's first codebook holds a slice of the
    latent only): a ConfigError naming the fix, before any work."""
    if config.loss.phone_weight <= 0:
        return
    if config.model.quantizer.kind != "residual":
        raise ConfigError(
            f"loss.phone_weight needs model.quantizer.kind=residual (a {config.model.quantizer.kind} quantizer's "
            "first codebook holds part of the latent only); set the weight to 0"
        )
    if not phone_alignments:
        raise ConfigError(
            "loss.phone_weight needs phone labels: pass --phones ALIGNMENTS (a `vqaudio align` folder of "
            "utterances that are in --data), or set the weight to 0"
        )


def _audio_and_labels(batch: Tensor | Sequence[Tensor]) -> tuple[Tensor, Tensor | None]:
    """A loader item: the crops alone, or the crops with their phone labels (``LabelledCrops``; the
    DataLoader hands the pair over as a list)."""
    if isinstance(batch, Tensor):
        return batch, None
    audio, labels = batch
    return audio, labels


def _float32(judgements: list[Judgement]) -> list[Judgement]:
    """Discriminator outputs made under autocast, as float32 for the losses."""
    return [Judgement(j.logits.float(), [f.float() for f in j.features]) for j in judgements]


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"
