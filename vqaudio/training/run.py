"""One training run's machinery, shared by the tokenizer's and the prior's trainers.

A trainer holds only its model, its step and its validation; what every run needs is here:

    RunFolder         the run folder ``OUT``: the files a run writes, and the rules for starting, resuming
                      and overwriting (a folder that holds a run is never replaced without ``--overwrite``)
    TrainingRun       the step counter, the checkpoint cadence and checkpoints on exit, on Ctrl-C and on
                      SIGTERM (vqaudio.training.signals), and the stop agreed by all processes under DDP
    parameter_groups  AdamW groups: no weight decay on biases, norm gains and embeddings
    set_learning_rate the scheduled rate (vqaudio.training.schedule) into an optimizer's groups
    seed_step         the global generators seeded from (seed, rank, step): a step's randomness does not
                      depend on the history, so resuming is exact on any number of processes

Resuming is exact because everything a step depends on is in the checkpoint (vqaudio.training.checkpoint)
and the learning rate is a function of the step; ``RunLog`` drops the metrics rows logged after the
checkpoint's step, so the logs of a resumed run read like one uninterrupted run.
"""

from __future__ import annotations

import logging
import random
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vqaudio.io.atomic import check_writable, remove_stale_temporaries
from vqaudio.training.checkpoint import CHECKPOINT_FILE, load_checkpoint
from vqaudio.training.distributed import SINGLE_PROCESS, DistributedContext, all_reduce_sum, barrier
from vqaudio.training.signals import StopRequest, stop_on_signals

log = logging.getLogger(__name__)


class RunFolder:
    """The run folder ``out`` and what a run writes there.

    Args:
        out: the folder.
        files: the names a run writes (what ``--overwrite`` removes).
        guarded: those whose presence without a checkpoint to resume means "a run is here": starting
            over then needs ``overwrite`` (default: all of ``files``).
        refusal: the one-line message of that refusal, a ``str.format`` template with ``{out}``,
            ``{existing}`` (the names found) and ``{why}`` (no checkpoint, or resuming was not asked for).
    """

    def __init__(
        self, out: str | Path, files: Sequence[str], refusal: str, guarded: Sequence[str] | None = None
    ) -> None:
        self.out = Path(out)
        self.files = tuple(files)
        self.guarded = self.files if guarded is None else tuple(guarded)
        self.refusal = refusal

    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT_FILE

    def existing(self, names: Sequence[str] | None = None) -> list[str]:
        """Which of ``names`` (default: the run's files) are in the folder."""
        return [name for name in (self.files if names is None else names) if (self.out / name).exists()]

    def open(
        self,
        *,
        resume: bool,
        overwrite: bool,
        resumable: Callable[[dict[str, Any]], bool] | None = None,
        context: DistributedContext = SINGLE_PROCESS,
    ) -> dict[str, Any] | None:
        """The checkpoint to resume from, or None for a new run in an emptied folder.

        Args:
            resume: continue from the checkpoint when there is one.
            overwrite: allow removing the run that is there.
            resumable: whether the loaded checkpoint may be resumed (False: start over); it raises where
                starting over is not allowed.
            context: under DDP every rank decides, then rank 0 removes the old files.
        Raises:
            FileExistsError: the folder holds a run that would be replaced and ``overwrite`` is False.
            OutputError: the folder cannot be written (read-only disk, no permission), before any work.
        """
        check_writable(self.out)
        if context.is_main:  # temporaries of a killed run (a checkpoint half written by kill -9)
            for name in self.files:
                remove_stale_temporaries(self.out / name)
        if resume and self.checkpoint_path.is_file():
            checkpoint = load_checkpoint(self.checkpoint_path)
            if resumable is None or resumable(checkpoint):
                return checkpoint
        else:
            existing = self.existing(self.guarded)
            if existing and not overwrite:
                why = (
                    "--no-resume was given"
                    if self.checkpoint_path.is_file()
                    else f"there is no {CHECKPOINT_FILE} to resume"
                )
                raise FileExistsError(
                    self.refusal.format(out=self.out, existing=", ".join(existing), why=why)
                )
        self.clear(context)
        return None

    def clear(self, context: DistributedContext = SINGLE_PROCESS) -> None:
        """Remove the run's files (rank 0, once every rank got here) and create the folder."""
        barrier()  # every rank has decided before rank 0 removes anything
        if context.is_main:
            for name in self.existing():
                path = self.out / name
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            self.out.mkdir(parents=True, exist_ok=True)
        barrier()


class TrainingRun:
    """The step of a run and when it is saved: on the trainer's cadence, at the end and on Ctrl-C / SIGTERM.

    The trainer's loop reads::

        with run.stoppable():
            while run.step < stop:
                ... forward, backward ...
                with run.updating():
                    optimizer.step()
                    run.step += 1
                ... log, validate ...
                if run.due(checkpoint_every, stop):
                    run.save()
                run.stop_if_asked()

    Args:
        folder: the run folder (for messages).
        save: writes the trainer's checkpoint (and release model) of the current step; called on rank 0 only
            and at most once per step. It must not use collectives: it also runs after an interrupt.
        step: the step the run starts from (the checkpoint's when resumed).
        resumed: the checkpoint of ``step`` is already on disk.
        context: this process's place under DDP.
    """

    def __init__(
        self,
        folder: RunFolder,
        save: Callable[[], None],
        step: int = 0,
        resumed: bool = False,
        context: DistributedContext = SINGLE_PROCESS,
    ) -> None:
        self.folder = folder
        self._save = save
        self.step = step
        self.start_step = step
        self.context = context
        self.stop_request = StopRequest()
        self._updating = False  # True while the optimizers change the weights: no checkpoint then
        self._saved_step = step if resumed else -1

    def due(self, every: int, last: int) -> bool:
        """Whether the step just done is a multiple of ``every`` or the ``last`` one."""
        return self.step % every == 0 or self.step == last

    @contextmanager
    def updating(self) -> Iterator[None]:
        """Around an optimizer update: an interrupt inside it leaves the last checkpoint as it was."""
        self._updating = True
        yield
        self._updating = False

    def save(self) -> None:
        """Write the checkpoint of this step (rank 0; nothing when it is already written)."""
        if not self.context.is_main or self._saved_step == self.step:
            return
        self._save()
        self._saved_step = self.step

    @contextmanager
    def stoppable(self) -> Iterator[None]:
        """Within the block, the first SIGINT / SIGTERM asks the loop to stop after the current step
        (``stop_if_asked``); a KeyboardInterrupt leaving the block is preceded by a checkpoint. The handlers
        stay installed while that checkpoint is written, so a repeated SIGTERM cannot cut it short."""
        with stop_on_signals(self.stop_request, announce=self.context.is_main):
            try:
                yield
            except KeyboardInterrupt:
                self._save_after_interrupt()
                raise

    def stop_if_asked(self) -> None:
        """Raise KeyboardInterrupt when any process was asked to stop (all leave at the same step)."""
        requested = self.stop_request.requested
        if self.context.is_distributed:
            requested = bool(all_reduce_sum(torch.tensor([1.0 if requested else 0.0])) > 0)
        if requested:
            raise KeyboardInterrupt

    def _save_after_interrupt(self) -> None:
        if self._updating:
            log.warning(
                "interrupted during a weight update at step %d: no checkpoint written; the last one is kept",
                self.step,
            )
            return
        self.save()
        if self.context.is_main:
            log.warning(
                "interrupted at step %d; checkpoint written to %s; run the same command again to resume",
                self.step,
                self.folder.checkpoint_path,
            )


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices and conv kernels only; biases, norm gains and embeddings (and
    the prior's start vector) are not pulled towards zero. Frozen parameters are left out."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if parameter.dim() < 2 or "embedding" in name:
            no_decay.append(parameter)
        else:
            decay.append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def set_learning_rate(optimizer: torch.optim.Optimizer, learning_rate: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = learning_rate


def seed_step(seed: int, rank: int, step: int) -> None:
    """Seed the global generators (torch on every device, numpy, python) from (seed, rank, step)."""
    words = np.random.SeedSequence([seed, rank, step]).generate_state(4)  # 4 x uint32
    torch.manual_seed((int(words[0]) << 32) | int(words[1]))
    np.random.seed(int(words[2]))
    random.seed(int(words[3]))
