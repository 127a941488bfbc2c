"""Training state on disk: one ``checkpoint.pt`` per run, written atomically, read without unpickling code.

The release model (``model.safetensors`` + ``config.json``, see ``vqaudio.io.model_file``) is what users
load; this file is what ``vqaudio train`` resumes from. It holds only tensors, numbers, strings, lists and
dicts, so ``torch.load(weights_only=True)`` reads it: nothing in a checkpoint can run code. Random
generator states are stored in that form too (python's and numpy's as integer tensors).

Keys of the state dict (``CHECKPOINT_KEYS``):
    format, format_version, vqaudio_version: what wrote it.
    step: optimizer updates done.
    config: the resolved ``Config`` as a dict (the architecture is read back from here on resume).
    model: the model's state dict (no ``module.`` prefixes).
    optimizer: ``AdamW.state_dict()``.
    scheduler: ``{"step": step}`` (the learning rate is a function of the step, vqaudio.training.schedule).
    rng: ``rng_states()`` of rank 0 when the checkpoint was written.
    sampler: the data sampler's position (``RandomCrops.state()``).
    run: what the run was trained on (data, recipe, world size), for the release model's metadata.
    validation: the latest validation metrics (may be empty).
    discriminators (only with adversarial training): ``{"model": state dict, "optimizer": AdamW state}``.
    grad_scaler (written since mixed precision, issue 29): ``torch.amp.GradScaler.state_dict()`` under
        ``train.precision: fp16``, empty otherwise (vqaudio.training.precision).
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqaudio._version import __version__
from vqaudio.errors import ModelFileError
from vqaudio.io.atomic import atomic_path

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = "vqaudio-training-state"
FORMAT_VERSION = 1
CHECKPOINT_KEYS = (
    "format",
    "format_version",
    "vqaudio_version",
    "step",
    "config",
    "model",
    "optimizer",
    "scheduler",
    "rng",
    "sampler",
    "run",
    "validation",
)


def rng_states() -> dict[str, Any]:
    """The global generators of torch, numpy and python as tensors and plain values (weights_only-safe)."""
    python_version, python_internal, python_gauss = random.getstate()
    numpy_name, numpy_keys, numpy_position, numpy_has_gauss, numpy_gauss = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": str(numpy_name),
            "keys": torch.from_numpy(np.asarray(numpy_keys, dtype=np.int64)),  # uint32 values
            "position": int(numpy_position),
            "has_gauss": int(numpy_has_gauss),
            "cached_gaussian": float(numpy_gauss),
        },
        "python": {
            "version": int(python_version),
            "internal": torch.tensor(python_internal, dtype=torch.int64),  # 625 values < 2**32
            "gauss_next": python_gauss,
        },
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    """Inverse of ``rng_states``."""
    torch.set_rng_state(states["torch"])
    numpy_state = states["numpy"]
    np.random.set_state(
        (
            numpy_state["bit_generator"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = states["python"]
    random.setstate(
        (python_state["version"], tuple(int(v) for v in python_state["internal"]), python_state["gauss_next"])
    )


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (see the module docstring) to ``path`` atomically: a temporary file, then a rename.

    An exception or Ctrl-C while writing leaves the previous checkpoint in place and no partial file.

    Args:
        path: usually ``OUT/checkpoint.pt``.
        state: the keys of ``CHECKPOINT_KEYS`` except the three format keys, which are added here.
    Returns:
        ``path``.
    """
    missing = [key for key in CHECKPOINT_KEYS[3:] if key not in state]
    if missing:
        raise ValueError(
            f"save_checkpoint: state lacks {missing}; expected the keys {list(CHECKPOINT_KEYS[3:])}"
        )
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, "vqaudio_version": __version__, **state}
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(
            full, handle
        )  # through a Python file: a full disk raises OSError (ENOSPC), not a C++ error
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` with ``torch.load(weights_only=True)`` on the CPU.

    Raises:
        ModelFileError: missing, unreadable, not a vqaudio training state, or from a newer vqaudio.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise ModelFileError(
            f"{path}: cannot read this training checkpoint ({str(exc).strip().splitlines()[0]}); "
            "delete it (or pass --overwrite) to start the run over"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a vqaudio training checkpoint (no format {FORMAT!r})")
    if int(state.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: checkpoint format {state['format_version']} is newer than this vqaudio ({__version__}) "
            "reads; upgrade vqaudio to resume it"
        )
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        raise ModelFileError(f"{path}: incomplete checkpoint, missing {missing}")
    return state
