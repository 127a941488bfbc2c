"""Model files: safetensors weights plus a JSON config, never pickles.

A model is a folder with ``model.safetensors`` and ``config.json``. The same JSON is also stored in the
safetensors header (key ``vqaudio_config``) so a lone ``.safetensors`` file describes itself.
``weights_sha256`` is the hash of the tensors (names, dtypes, shapes and bytes), which identifies a model
independently of header metadata; token files and priors record it.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Mapping
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
MAX_DESCRIPTION_BYTES = 64 * 2**20  # config.json (and the same JSON in the weights header) is a few KB
MAX_HEADER_BYTES = 100 * 2**20  # the safetensors header (names, dtypes, shapes); safetensors' own limit
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}  # fmt: skip


class ExpectedTensors(NamedTuple):
    """The tensors a model file's config makes: what ``check_shapes`` compares the file's header with."""

    shapes: Mapping[str, tuple[int, ...]]  # every tensor the model may hold: name -> shape
    optional: frozenset[str] = frozenset()  # names a file may leave out (e.g. training statistics)


# (description, weights file) -> the tensors its config makes
ExpectedShapes = Callable[[dict[str, Any], Path], ExpectedTensors]


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
        digest.update(tensor.view(torch.uint8).numpy().data if tensor.numel() else b"")  # a view: no copy
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
    """The JSON description of a model, without loading its tensors.

    Raises:
        ModelFileError: no description, or one that is not a JSON object whose ``config`` is an object.
    """
    weights = resolve_model_path(path)
    config_json = weights.parent / CONFIG_FILE
    if weights.name == WEIGHTS_FILE and config_json.is_file():
        if config_json.stat().st_size > MAX_DESCRIPTION_BYTES:
            raise ModelFileError(
                f"{config_json}: {config_json.stat().st_size} bytes, more than a model description's "
                f"{MAX_DESCRIPTION_BYTES} (a few KB is usual); reinstall or re-export the model"
            )
        return _parse_description(config_json.read_bytes(), config_json)
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
    return _parse_description(header.encode(), weights)


def _parse_description(text: bytes, where: Path) -> dict[str, Any]:
    """A model description: a JSON object whose ``config`` is an object."""
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{where}: not valid JSON ({exc}); reinstall or re-export the model") from exc
    except RecursionError as exc:
        raise ModelFileError(
            f"{where}: JSON nested too deeply to be a model description; reinstall or re-export the model"
        ) from exc
    if not isinstance(meta, dict):
        raise ModelFileError(
            f"{where}: holds a JSON {type(meta).__name__}, expected an object with format, config and "
            "weights_sha256; reinstall or re-export the model"
        )
    if not isinstance(meta.get("training", {}) or {}, dict):
        raise ModelFileError(
            f"{where}: 'training' is a JSON {type(meta['training']).__name__}, expected an object (the training "
            "record); reinstall or re-export the model"
        )
    if not isinstance(meta.get("config"), dict):
        raise ModelFileError(
            f"{where}: 'config' is {json.dumps(meta.get('config'))[:40]}, expected the object of settings the "
            "model was built with; reinstall or re-export the model"
        )
    return meta


def tensor_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in a safetensors file, from its header alone (no tensor is read).

    Raises:
        ModelFileError: not a safetensors file, or a file whose size differs from what its header describes
            (bytes appended, or a truncated file).
    """
    size = weights.stat().st_size
    try:
        with weights.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
                raise ValueError(f"header length {length}")
            header = json.loads(handle.read(length))
        entries = {name: entry for name, entry in header.items() if name != "__metadata__"}
        shapes = {name: tuple(int(n) for n in entry["shape"]) for name, entry in entries.items()}
        data = 0
        for name, entry in entries.items():
            begin, end = (int(n) for n in entry["data_offsets"])
            count = 1
            for n in shapes[name]:
                count *= n
            if end - begin != count * _DTYPE_BYTES[entry["dtype"]]:
                raise ValueError(f"tensor {name!r} has {end - begin} bytes for shape {list(shapes[name])}")
            data = max(data, end)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error, RecursionError) as exc:
        raise ModelFileError(
            f"{weights}: not a safetensors model file ({exc}); reinstall or re-export it"
        ) from exc
    if size != 8 + length + data:
        raise ModelFileError(
            f"{weights}: {size} bytes, but its header describes {8 + length + data}; the file was damaged or "
            "extended, reinstall or re-export it"
        )
    return shapes


def check_shapes(weights: Path, expected: ExpectedTensors) -> None:
    """Raise ModelFileError when the file's tensors (names and shapes, from the header) are not ``expected``."""
    shapes = tensor_shapes(weights)
    missing = sorted(set(expected.shapes) - set(shapes) - expected.optional)
    unexpected = sorted(set(shapes) - set(expected.shapes))
    if missing or unexpected:
        raise ModelFileError(
            f"{weights}: the weights do not match the saved config: "
            + "; ".join(
                f"{label} {names[:3]}{f' (+{len(names) - 3} more)' if len(names) > 3 else ''}"
                for label, names in (("missing", missing), ("unexpected", unexpected))
                if names
            )
            + "; re-export the model"
        )
    for name in sorted(shapes):
        if tuple(expected.shapes[name]) != shapes[name]:
            raise ModelFileError(
                f"{weights}: the weights do not match the saved config: {name} has shape {list(shapes[name])}, "
                f"the config makes {list(expected.shapes[name])}; re-export the model"
            )


def load_model_file(
    path: str | Path,
    expected_format: str,
    verify_hash: bool = True,
    expected_shapes: ExpectedShapes | None = None,
) -> ModelFile:
    """Read a model written by ``save_model_file``; checks format and (by default) the weights hash.

    Args:
        expected_shapes: (description, file) -> the tensors (name -> shape) its config makes; checked against the
            file's header before any tensor is read, so a config.json edited to other sizes (it is not covered
            by the hash) fails with one line, and a file far larger than its config never loads. It raises
            ModelFileError for a config that cannot be used.
    """
    weights = resolve_model_path(path)
    meta = read_meta(weights)
    if meta.get("format") != expected_format:
        raise ModelFileError(
            f"{weights}: holds a {meta.get('format')!r} model, expected {expected_format!r}; "
            "check which model path you passed"
        )
    version = meta.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ModelFileError(
            f"{weights}: format_version must be an integer, got {version!r}; reinstall or re-export it"
        )
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{weights}: format version {meta.get('format_version')} is newer than this vqaudio "
            f"({__version__}) reads; upgrade vqaudio"
        )
    if expected_shapes is not None:
        check_shapes(weights, expected_shapes(meta, weights))
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
