"""Where training metrics go: ``OUT/metrics.jsonl`` (one JSON object per log step or validation) and
TensorBoard event files in ``OUT/tensorboard/`` (scalars, validation audio clips, spectrogram images).

Shared by the tokenizer's trainer (rows ``{"kind": ..., "step": ..., ...}``, ``write``) and the prior's (rows
``{"step": ..., "split": ..., ...}``, ``append`` and ``scalar``). Both are written by rank 0 only. On resume,
JSONL rows and TensorBoard events after the checkpoint's step (logged by the interrupted run after its last
checkpoint, and about to be redone) are dropped, so the logs read like one uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from vqaudio.features import LogMel
from vqaudio.io.atomic import atomic_path
from vqaudio.optional import is_installed

if TYPE_CHECKING:
    from vqaudio.codec.validation import ValidationExample

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
PER_CODEBOOK = ("commitment", "codebook_usage", "perplexity")  # list-valued metrics: one scalar per codebook


class RunLog:
    """Append metrics to ``OUT/metrics.jsonl`` and TensorBoard.

    Args:
        out: the run folder.
        start_step: the step training starts from; logged rows after it are dropped (resume).
        sample_rate: of the audio clips (None: a run without audio).
        tensorboard: also write TensorBoard event files.
        silence_with: the setting that turns them off, named in the warning when TensorBoard is missing.
    """

    def __init__(
        self,
        out: str | Path,
        start_step: int,
        sample_rate: int | None = None,
        tensorboard: bool = True,
        silence_with: str | None = None,
    ) -> None:
        self.out = Path(out)
        self.metrics_path = self.out / METRICS_FILE
        self.tensorboard_path = self.out / TENSORBOARD_DIR
        self.sample_rate = sample_rate
        self.out.mkdir(parents=True, exist_ok=True)
        _drop_rows_after(self.metrics_path, start_step)
        self.writer: Any = None
        if tensorboard and not is_installed("tensorboard"):
            log.warning(
                "TensorBoard is not installed: metrics go to %s only (pip install 'vqaudio[train]'%s)",
                self.metrics_path,
                f", or set {silence_with} to silence this" if silence_with else "",
            )
        elif tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when used

            # purge_step hides the events after the checkpoint that an interrupted run had already written
            self.writer = SummaryWriter(
                str(self.tensorboard_path), purge_step=start_step + 1 if start_step else None
            )
        self._images = is_installed("matplotlib")  # log-mel images of the validation examples
        self._references_written: set[str] = set()
        self._log_mel = None if sample_rate is None else LogMel(sample_rate, 1024, 256, 80)

    def write(self, kind: str, step: int, metrics: dict[str, Any]) -> None:
        """Append one row ``{"kind": kind, "step": step, **metrics}`` and its scalars (``kind/name``)."""
        row = {"kind": kind, "step": step, **{name: _plain(value) for name, value in metrics.items()}}
        self.append(row)
        if self.writer is None:
            return
        for name, value in row.items():
            if name in ("kind", "step"):
                continue
            if isinstance(value, list):
                for index, item in enumerate(value):
                    self.writer.add_scalar(f"{kind}/{name}/codebook_{index}", item, step)
            elif isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"{kind}/{name}", value, step)

    def append(self, row: dict[str, Any]) -> None:
        """Append ``row`` to metrics.jsonl as it is (JSON-ready values)."""
        with self.metrics_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")

    def scalar(self, tag: str, value: float, step: int) -> None:
        """One TensorBoard scalar (nothing without TensorBoard)."""
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def examples(self, step: int, examples: list[ValidationExample]) -> None:
        """Validation audio (reconstruction every time, reference once) and log-mel images to TensorBoard."""
        if self.writer is None:
            return
        for index, example in enumerate(examples):
            tag = f"example_{index}"
            reconstruction = example.reconstruction.float().clamp(-1, 1)
            self.writer.add_audio(f"{tag}/reconstruction", reconstruction[None], step, self.sample_rate)
            if example.utterance_id not in self._references_written:
                reference = example.reference.float().clamp(-1, 1)
                self.writer.add_audio(f"{tag}/reference", reference[None], step, self.sample_rate)
                self._references_written.add(example.utterance_id)
            if self._images:
                image = self._spectrogram_image(example)
                self.writer.add_image(f"{tag}/log_mel", image, step, dataformats="HWC")
        self.writer.flush()

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _spectrogram_image(self, example: ValidationExample) -> np.ndarray:
        """[H, W, 4] uint8 RGBA: reference and reconstruction log-mels one above the other."""
        assert self._log_mel is not None, "RunLog(sample_rate=None) has no audio examples"
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global figure state
        from matplotlib.figure import Figure

        with torch.no_grad():
            mels = [
                self._log_mel(audio.float()[None])[0].numpy()
                for audio in (example.reference, example.reconstruction)
            ]
        low, high = float(min(m.min() for m in mels)), float(max(m.max() for m in mels))
        figure = Figure(figsize=(8, 4.5), dpi=80)
        canvas = FigureCanvasAgg(figure)
        axes = figure.subplots(2, 1, sharex=True)
        for axis, mel, title in zip(axes, mels, ("reference", "reconstruction"), strict=True):
            axis.imshow(mel, origin="lower", aspect="auto", vmin=low, vmax=high, cmap="magma")
            axis.set_title(f"{example.utterance_id}: {title}", fontsize=9)
            axis.set_ylabel("mel band")
        axes[-1].set_xlabel("frame (hop 256)")
        figure.tight_layout()
        canvas.draw()
        return np.asarray(canvas.buffer_rgba()).copy()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``metrics.jsonl`` file (empty when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _drop_rows_after(path: Path, step: int) -> None:
    rows = read_metrics(path)
    kept = [row for row in rows if int(row.get("step", 0)) <= step]
    if len(kept) == len(rows):
        return
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(row) + "\n" for row in kept), encoding="utf-8")


def _plain(value: Any) -> Any:
    """Tensors and numpy values -> JSON numbers / lists."""
    if isinstance(value, (Tensor, np.ndarray)):
        value = value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    return value
