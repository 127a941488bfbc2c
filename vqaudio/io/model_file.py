"""Model files: safetensors weights plus a JSON config, never pickles.

A model is a folder with ``model.safetensors`` and ``config.json``. The same JSON is also stored in the
safetensors header (key ``vqaudio_config``) so a lone ``.safetensors`` file describes itself.
``weights_sha256`` is the hash of the tensors (names, dtypes, shapes and bytes), which identifies a model
independently of header metadata; token files and priors record it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from vqaudio._version import __version__
from vqaudio.errors import ModelFileError
from vqaudio.io.atomic import atomic_path

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
HEADER_KEY = "vqaudio_config"


class ModelFile(NamedTuple):
    """A loaded model file: its tensors and its JSON description."""

    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any]
    path: Path


def one_line(value: Any) -> str:
    """A value of a model's metadata (e.g. its training record) on one line, for ``vqaudio info``: mappings as
    ``key value`` pairs, floats rounded to 4 significant digits."""
    if isinstance(value, Mapping):
        return ", ".join(f"{key} {one_line(item)}" for key, item in value.items())
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(one_line(item) for item in value) + "]"
    return str(value)


def weights_hash(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over sorted tensor names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def clean_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip DDP / torch.compile prefixes and make tensors contiguous, owned and CPU-resident."""
    cleaned = {}
    for name, tensor in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            while name.startswith(prefix):
                name = name[len(prefix) :]
        cleaned[name] = tensor.detach().cpu().contiguous().clone()
    return cleaned


def save_model_file(folder: str | Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/config.json`` atomically; returns the folder.

    ``meta`` must hold ``format`` (e.g. ``"vqaudio-tokenizer"``) and ``config``; the format version, package
    version and weights hash are added here.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = clean_state_dict(state_dict)
    full = {
        "format": meta["format"],
        "format_version": FORMAT_VERSION,
        "vqaudio_version": __version__,
        **{k: v for k, v in meta.items() if k != "format"},
        "weights_sha256": weights_hash(tensors),
    }
    text = json.dumps(full, indent=2, sort_keys=False)
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={HEADER_KEY: text})
    with atomic_path(folder / CONFIG_FILE) as tmp:
        tmp.write_text(text + "\n")
    return folder


def resolve_model_path(path: str | Path) -> Path:
    """A model folder, a training run folder holding one, or a ``.safetensors`` file -> the weights file."""
    path = Path(path)
    if path.is_dir():
        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            raise ModelFileError(
                f"{path}: no {WEIGHTS_FILE} in this folder; pass a model folder written by `vqaudio train` "
                "or a .safetensors model file"
            )
        return weights
    if path.is_file():
        return path
    raise ModelFileError(f"{path}: no such model folder or file")


def read_meta(path: str | Path) -> dict[str, Any]:
    """The JSON description of a model, without loading its tensors."""
    weights = resolve_model_path(path)
    config_json = weights.parent / CONFIG_FILE
    if weights.name == WEIGHTS_FILE and config_json.is_file():
        try:
            return json.loads(config_json.read_text())
        except json.JSONDecodeError as exc:
            raise ModelFileError(
                f"{config_json}: not valid JSON ({exc}); reinstall or re-export the model"
            ) from exc
    try:
        with safe_open(str(weights), framework="pt") as handle:
            header = (handle.metadata() or {}).get(HEADER_KEY)
    except (SafetensorError, OSError) as exc:
        raise ModelFileError(
            f"{weights}: not a safetensors model file ({exc}); reinstall or re-export it"
        ) from exc
    if header is None:
        raise ModelFileError(
            f"{weights}: no vqaudio config in the file header and no {CONFIG_FILE} beside it"
        )
    return json.loads(header)


def load_model_file(path: str | Path, expected_format: str, verify_hash: bool = True) -> ModelFile:
    """Read a model written by ``save_model_file``; checks format and (by default) the weights hash."""
    weights = resolve_model_path(path)
    meta = read_meta(weights)
    if meta.get("format") != expected_format:
        raise ModelFileError(
            f"{weights}: holds a {meta.get('format')!r} model, expected {expected_format!r}; "
            "check which model path you passed"
        )
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelFileError(
            f"{weights}: format version {meta.get('format_version')} is newer than this vqaudio "
            f"({__version__}) reads; upgrade vqaudio"
        )
    try:
        state_dict = load_file(str(weights))
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise ModelFileError(
            f"{weights}: corrupt weights file ({exc}); reinstall or re-export the model"
        ) from exc
    if verify_hash:
        actual = weights_hash(state_dict)
        if actual != meta.get("weights_sha256"):
            raise ModelFileError(
                f"{weights}: weights hash {actual[:12]} does not match the recorded "
                f"{str(meta.get('weights_sha256'))[:12]}; the file was modified or damaged, reinstall or re-export it"
            )
    return ModelFile(state_dict, meta, weights)
