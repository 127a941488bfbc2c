"""``Prior``: the user-facing token prior (load/save, likelihood, sampling) and its model-file description.

A prior model is a folder like the tokenizer's (``vqaudio.io.model_file``): ``model.safetensors`` +
``config.json`` with ``format: "vqaudio-prior"``, the resolved ``PriorRunConfig``, the tokenizer it was
trained on (its weights hash, name and path) and the token stream's geometry (codebooks, codebook size,
frame rate)::

    prior = Prior.load("exp/prior1")            # or Prior.load(): the embedded default prior
    nats = prior.log_prob(codes)                # [n_q, F] -> [n_q, F] natural-log likelihood per token
    codes = prior.generate(500, seed=0)         # [n_q, 500]: 10 s at 50 Hz

The network is ``vqaudio.prior.wavenet.WaveNetPrior`` (van den Oord et al., 2016); generation uses the
queue-based fast algorithm of Paine et al. (2016) by default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vqaudio._version import __version__
from vqaudio.config import (
    NUM_SAMPLES,
    SAMPLE_SECONDS,
    ConfigError,
    PriorConfig,
    PriorRunConfig,
    Range,
    check_token_meta,
    check_value,
    from_dict,
    to_dict,
)
from vqaudio.devices import resolve_device
from vqaudio.errors import InputError, ModelFileError, TokenFileError
from vqaudio.io.model_file import (
    WEIGHTS_FILE,
    ExpectedTensors,
    clean_state_dict,
    load_model_file,
    one_line,
    save_model_file,
    weights_hash,
)
from vqaudio.prior.generation import generate_codes
from vqaudio.prior.wavenet import WaveNetPrior, dilations, receptive_field, validate_config

FORMAT = "vqaudio-prior"
PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained" / "prior"
# How a prior file may store its floating-point tensors (``weights_dtype`` in the description; absent in files
# written before it existed: float32). Weights are always loaded and run as float32; float16 halves the file
# (the embedded prior) at a cost in bits per token far below what training noise moves.
WEIGHTS_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def token_stream(meta: Mapping[str, Any], tokenizer_path: str | None = None) -> dict[str, Any]:
    """A token file's ``.meta`` -> the prior's ``tokens`` record (tokenizer identity and stream geometry).

    Args:
        meta: ``TokenCorpus.meta`` (``model_hash``, ``model_name``, ``num_codebooks`` (or ``n_q``),
            ``codebook_size``, ``sample_rate``, ``hop_length``, ``frame_rate``; ``pitch_rows`` and
            ``pitch_levels`` are recorded when present).
        tokenizer_path: where the tokenizer lives, recorded so ``sample`` finds it (default: ``model_path``
            from the metadata, if any).
    """
    num_codebooks = meta.get("num_codebooks", meta.get("n_q"))
    frame_rate = meta.get("frame_rate")
    if frame_rate is None and meta.get("sample_rate") and meta.get("hop_length"):
        frame_rate = meta["sample_rate"] / meta["hop_length"]
    missing = [
        name
        for name, value in (
            ("model_hash", meta.get("model_hash")),
            ("num_codebooks", num_codebooks),
            ("codebook_size", meta.get("codebook_size")),
            ("frame_rate", frame_rate),
        )
        if value is None
    ]
    if missing:
        raise TokenFileError(
            f"token metadata lacks {missing}; expected the out.meta.json written by `vqaudio tokenize`"
        )
    stream = {
        "tokenizer_hash": str(meta["model_hash"]),
        "tokenizer_name": meta.get("model_name"),
        "tokenizer_path": tokenizer_path or meta.get("model_path"),
        "sample_rate": meta.get("sample_rate"),
        "frame_rate": float(frame_rate),  # type: ignore[arg-type]
        "hop_length": meta.get("hop_length"),
        "num_codebooks": int(num_codebooks),  # type: ignore[arg-type]
        "codebook_size": int(meta["codebook_size"]),
    }
    if "pitch_rows" in meta:  # so that `prior sample --tokens-only` can describe its samples' rows
        stream["pitch_rows"] = int(meta["pitch_rows"] or 0)
        stream["pitch_levels"] = meta.get("pitch_levels")
    return stream


class Prior:
    """A trained WaveNet token prior and what it was trained on.

    Args:
        model: the network (kept in eval mode).
        run_config: the resolved architecture and training config.
        tokens: the ``token_stream`` record of the training tokens.
        speakers: condition id -> speaker name, for a conditioned prior.
        training: free-form facts about the run (steps, validation bits), stored in the model file.
        path: where it was loaded from, if anywhere.
        weights_hash: the model file's ``weights_sha256`` (None: computed from the weights when asked).

    Attributes:
        model, config (PriorConfig), run_config, tokens, speakers, num_codebooks, codebook_size, frame_rate,
        sample_rate, tokenizer_hash, receptive_field (frames), receptive_field_seconds, hash.
    """

    def __init__(
        self,
        model: WaveNetPrior,
        run_config: PriorRunConfig,
        tokens: Mapping[str, Any],
        speakers: Sequence[str] = (),
        training: Mapping[str, Any] | None = None,
        path: Path | None = None,
        weights_hash: str | None = None,
    ) -> None:
        if len(speakers) != model.num_conditions:
            raise ValueError(f"{model.num_conditions} condition ids but {len(speakers)} speaker names")
        if run_config.prior != model.config:
            raise ValueError(
                "run_config.prior differs from the network's own config; pass the config it was built from"
            )
        self.model = model.eval()
        self.run_config = run_config
        self.config = model.config
        self.tokens = dict(tokens)
        self.speakers = tuple(speakers)
        self.training = dict(training or {})
        self.path = path
        self.num_codebooks = model.num_codebooks
        self.codebook_size = model.codebook_size
        self.frame_rate = float(self.tokens["frame_rate"])
        self.sample_rate = self.tokens.get("sample_rate")
        self.tokenizer_hash = str(self.tokens["tokenizer_hash"])
        self.receptive_field = model.receptive_field
        self.receptive_field_seconds = self.receptive_field / self.frame_rate
        self._hash = weights_hash

    def __repr__(self) -> str:
        return (
            f"Prior({self.num_codebooks} x {self.codebook_size} codes at {self.frame_rate:g} Hz, "
            f"receptive field {self.receptive_field} frames ({self.receptive_field_seconds:.2f} s), "
            f"tokenizer {self.tokenizer_hash[:12]}, {len(self.speakers)} speakers)"
        )

    @property
    def hash(self) -> str:
        """sha256 of the weights as their file stores them (``weights_sha256``); for a prior made in memory,
        of its float32 weights. Compressed files name their prior by it."""
        if self._hash is None:
            return weights_hash(clean_state_dict(self.model.state_dict()))
        return self._hash

    # ------------------------------------------------------------------------------------------------
    # Files
    # ------------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None) -> Prior:
        """Read a prior model folder (or its ``.safetensors``); None: the embedded default prior.

        Raises:
            ModelFileError: missing, corrupt or not a prior; no embedded default in this installation.
        """
        if path is None:
            if not (PRETRAINED_DIR / WEIGHTS_FILE).is_file():
                raise ModelFileError(
                    f"no embedded default prior is installed ({PRETRAINED_DIR} has no {WEIGHTS_FILE}); "
                    "pass --prior PATH (a prior trained with `vqaudio prior train`), or reinstall vqaudio"
                )
            path = PRETRAINED_DIR
        loaded = load_model_file(path, FORMAT, expected_shapes=_prior_shapes)
        meta = loaded.meta
        state_dict = _as_float32(loaded.state_dict, meta.get("weights_dtype", "float32"), loaded.path)
        run_config = _saved_config(meta, loaded.path)
        model = WaveNetPrior(run_config.prior)
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as exc:
            raise ModelFileError(
                f"{loaded.path}: weights do not match the saved config ({str(exc).splitlines()[0]})"
            ) from exc
        return cls(
            model,
            run_config,
            meta["tokens"],
            meta.get("speakers") or (),
            meta.get("training"),
            loaded.path,
            weights_hash=meta.get("weights_sha256"),
        )

    def description(self, name: str | None = None, weights_dtype: str = "float32") -> dict[str, Any]:
        """The JSON description written beside the weights (``config.json``)."""
        return {
            "format": FORMAT,
            "name": name or (self.path.parent.name if self.path else "prior"),
            "weights_dtype": weights_dtype,
            "config": to_dict(self.run_config),
            "tokens": self.tokens,
            "speakers": list(self.speakers),
            "num_parameters": sum(p.numel() for p in self.model.parameters()),
            "receptive_field_frames": self.receptive_field,
            "training": self.training,
        }

    def save(self, folder: str | Path, name: str | None = None, weights_dtype: str = "float32") -> Path:
        """Write ``folder/model.safetensors`` + ``folder/config.json`` atomically; returns the folder.

        Args:
            folder: the model folder (created if needed).
            name: the model's name (default: the folder's name).
            weights_dtype: how the file stores the weights, a key of ``WEIGHTS_DTYPES``: ``"float16"``
                halves the file (the embedded prior); ``load`` gives float32 weights either way. The weights
                hash is that of the stored tensors.
        """
        if weights_dtype not in WEIGHTS_DTYPES:
            raise InputError(f"weights_dtype must be one of {sorted(WEIGHTS_DTYPES)}, got {weights_dtype!r}")
        folder = Path(folder)
        dtype = WEIGHTS_DTYPES[weights_dtype]
        state_dict = {
            key: tensor.to(dtype) if tensor.is_floating_point() else tensor
            for key, tensor in self.model.state_dict().items()
        }
        overflow = [key for key, tensor in state_dict.items() if not bool(torch.isfinite(tensor).all())]
        if overflow:  # float16 tops out at 65504
            raise InputError(
                f"{overflow[0]} holds values that {weights_dtype} cannot represent (or were not finite to begin "
                'with); save with weights_dtype="float32"'
            )
        return save_model_file(folder, state_dict, self.description(name or folder.name, weights_dtype))

    def check_tokens(self, meta: Mapping[str, Any], force: bool = False, where: str = "tokens") -> None:
        """Raise TokenFileError when a token file's metadata does not fit this prior.

        Args:
            meta: a token file's ``.meta``.
            force: accept tokens from another tokenizer (same geometry) anyway.
            where: the file, for the message.
        """
        stream = token_stream(meta)
        if stream["num_codebooks"] != self.num_codebooks or stream["codebook_size"] != self.codebook_size:
            raise TokenFileError(
                f"{where}: {stream['num_codebooks']} codebooks x {stream['codebook_size']} codes, but the "
                f"prior models {self.num_codebooks} x {self.codebook_size}; tokenize with the prior's "
                "tokenizer and n_q"
            )
        if stream["tokenizer_hash"] != self.tokenizer_hash and not force:
            raise TokenFileError(
                f"{where}: tokens come from tokenizer {stream['tokenizer_hash'][:12]} "
                f"({stream['tokenizer_name']}), the prior was trained on {self.tokenizer_hash[:12]} "
                f"({self.tokens.get('tokenizer_name')}); their codes mean different things. Re-tokenize with "
                "the prior's tokenizer, or pass --force to use them anyway"
            )

    @property
    def device(self) -> torch.device:
        return self.model.start.device

    def to(self, device: str | torch.device) -> Prior:
        """Move the network to ``device`` (auto, cpu, cuda, cuda:N: ``vqaudio.devices.resolve_device``);
        returns self. Sampling draws its random numbers on the CPU."""
        self.model.to(resolve_device(device))
        return self

    # ------------------------------------------------------------------------------------------------
    # Likelihood and sampling
    # ------------------------------------------------------------------------------------------------
    def log_prob(self, codes: Tensor | np.ndarray, condition: Any = None) -> Tensor:
        """Natural-log likelihood of every token under the prior.

        Args:
            codes: [n_q, F] or [B, n_q, F] integer codes in [0, codebook_size).
            condition: for a conditioned prior, a speaker id or name (or one per sequence).
        Returns:
            float32 [n_q, F] or [B, n_q, F]; ``-log_prob(codes).mean() / ln 2`` is bits per token.
        """
        batch = self._as_codes(codes, "codes")
        ids = self._condition_ids(condition, batch.shape[0])
        with torch.no_grad():
            result = self.model.log_prob(batch, ids)
        return result if torch.as_tensor(codes).dim() == 3 else result[0]

    def generate(
        self,
        n_frames: int,
        prompt: Tensor | np.ndarray | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
        condition: Any = None,
        fast: bool = True,
        num_samples: int | None = None,
    ) -> Tensor:
        """Sample token frames, optionally continuing a prompt.

        Args:
            n_frames: frames to generate after the prompt (``seconds * frame_rate``); the output is never
                shorter than the prompt.
            prompt: [n_q, P] or [B, n_q, P] codes to continue (kept unchanged in the output).
            temperature: > 0 scales the logits; 0 picks the most likely code.
            top_k: sample among the k most likely codes only.
            seed: fixes the random stream (same seed, same tokens, fast or not); None: fresh randomness.
            condition: for a conditioned prior, a speaker id or name (or one per sequence).
            fast: queue-based incremental generation; False reruns the trunk over the receptive field
                per frame.
            num_samples: sequences to draw; None gives one unbatched sequence (or one per batched prompt).
        Returns:
            int64 [n_q, P + n_frames], or [B, n_q, P + n_frames] when ``num_samples`` is given or the prompt
            is batched.
        """
        if isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 0:
            raise InputError(f"n_frames must be a non-negative integer, got {n_frames!r}")
        most = round(SAMPLE_SECONDS.high * self.frame_rate)
        if n_frames > most:
            raise InputError(
                f"n_frames={n_frames} is more than the {most} frames ({SAMPLE_SECONDS.high:g} s at "
                f"{self.frame_rate:g} Hz) allowed; generate in parts, continuing each as a prompt"
            )
        if num_samples is not None:
            check_value("num_samples", num_samples, NUM_SAMPLES)
        if seed is not None:
            check_value("seed", seed, Range(-(2**63), 2**63 - 1))  # a torch generator's seed is 64-bit
        if not (temperature >= 0 and math.isfinite(temperature)):
            raise InputError(f"temperature must be a finite number >= 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise InputError(f"top_k must be at least 1 (or None for no truncation), got {top_k}")
        batched = num_samples is not None
        if prompt is None:
            batch = torch.zeros(num_samples or 1, self.num_codebooks, 0, dtype=torch.long, device=self.device)
        else:
            batch = self._as_codes(prompt, "prompt")
            batched = batched or torch.as_tensor(prompt).dim() == 3
            if num_samples is not None and batch.shape[0] != num_samples:
                if batch.shape[0] != 1:
                    raise InputError(
                        f"num_samples={num_samples} but the prompt holds {batch.shape[0]} sequences; pass "
                        "one prompt [n_q, P] (continued num_samples times) or one per sample"
                    )
                batch = batch.expand(num_samples, -1, -1)
        if batch.shape[2] + n_frames == 0:
            raise InputError("nothing to generate: n_frames is 0 and there is no prompt")
        ids = self._condition_ids(condition, batch.shape[0])
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        codes = generate_codes(self.model, batch, n_frames, ids, temperature, top_k, generator, fast=fast)
        codes = codes.clone()  # an ordinary tensor again (inference-mode tensors refuse in-place edits)
        return codes if batched else codes[0]

    def _as_codes(self, codes: Tensor | np.ndarray, name: str) -> Tensor:
        """[n_q, F] or [B, n_q, F] integer array -> validated int64 [B, n_q, F] on the model's device."""
        tensor = torch.as_tensor(np.asarray(codes) if isinstance(codes, np.ndarray) else codes)
        if tensor.dtype.is_floating_point or tensor.dtype == torch.bool or tensor.is_complex():
            raise TypeError(f"{name} must hold integer codes, got dtype {tensor.dtype}")
        if tensor.dim() == 2:
            tensor = tensor[None]
        if tensor.dim() != 3 or tensor.shape[1] != self.num_codebooks:
            raise InputError(
                f"{name} must be [n_q, frames] or [batch, n_q, frames] with n_q={self.num_codebooks}, "
                f"got shape {tuple(tensor.shape)}"
            )
        if tensor.numel() and (tensor.min() < 0 or tensor.max() >= self.codebook_size):
            raise InputError(
                f"{name} holds codes {int(tensor.min())}..{int(tensor.max())}, "
                f"outside [0, {self.codebook_size}); "
                "were they made by another tokenizer or with another codebook size?"
            )
        return tensor.long().to(self.device)

    def _condition_ids(self, condition: Any, batch_size: int) -> Tensor | None:
        """A speaker id or name (or one per sequence) -> [B] int64 ids; None stays None."""
        if condition is None:
            return None
        if isinstance(condition, (Tensor, np.ndarray)):
            items = (
                np.asarray(condition.cpu() if isinstance(condition, Tensor) else condition)
                .reshape(-1)
                .tolist()
            )
        else:
            items = list(condition) if isinstance(condition, (list, tuple)) else [condition]
        if len(items) == 1:
            items = items * batch_size
        ids = []
        for item in items:
            if isinstance(item, str):
                if item not in self.speakers:
                    known = ", ".join(self.speakers[:10]) or "none: the prior is unconditioned"
                    raise InputError(f"unknown speaker {item!r}; the prior knows {known}")
                ids.append(self.speakers.index(item))
            else:
                ids.append(int(item))
        if len(ids) != batch_size:
            raise InputError(
                f"got {len(ids)} conditions for {batch_size} sequences; pass one, or one per sequence"
            )
        return torch.tensor(ids, dtype=torch.long, device=self.device)


def _as_float32(state_dict: Mapping[str, Tensor], weights_dtype: Any, where: Path) -> dict[str, Tensor]:
    """Stored tensors -> float32, after checking that they are stored as the description says."""
    if weights_dtype not in WEIGHTS_DTYPES:
        raise ModelFileError(
            f"{where}: weights stored as {weights_dtype!r}, this vqaudio ({__version__}) reads "
            f"{sorted(WEIGHTS_DTYPES)}; upgrade vqaudio"
        )
    stored = WEIGHTS_DTYPES[weights_dtype]
    wrong = sorted(
        f"{key} ({tensor.dtype})"
        for key, tensor in state_dict.items()
        if tensor.is_floating_point() and tensor.dtype != stored
    )
    if wrong:
        raise ModelFileError(
            f"{where}: the description says {weights_dtype} weights, but {wrong[0]} differs"
            f"{f' (and {len(wrong) - 1} more)' if len(wrong) > 1 else ''}; reinstall or re-export the prior"
        )
    return {
        key: tensor.float() if tensor.is_floating_point() else tensor for key, tensor in state_dict.items()
    }


def _saved_config(meta: Mapping[str, Any], where: Path) -> PriorRunConfig:
    """A prior description's config and ``tokens`` record, checked (types, ranges, agreement) before anything
    is built from them."""
    try:
        run_config = from_dict(PriorRunConfig, meta.get("config"), where=f"{where}:config")
    except ConfigError as exc:
        raise ModelFileError(f"{exc}; the prior was written by another vqaudio version, retrain it") from exc
    tokens = meta.get("tokens")
    if not isinstance(tokens, Mapping):
        raise ModelFileError(f"{where}: no 'tokens' record in the model description; retrain the prior")
    try:
        check_token_meta(tokens, f"{where}:tokens")
        validate_config(run_config.prior)
    except ValueError as exc:  # ConfigError included
        raise ModelFileError(f"{exc}; retrain or re-export the prior") from exc
    recorded = (tokens.get("num_codebooks"), tokens.get("codebook_size"))
    if recorded != (run_config.prior.num_codebooks, run_config.prior.codebook_size):
        raise ModelFileError(
            f"{where}: the tokens record says {recorded[0]} codebooks x {recorded[1]} codes, the config "
            f"{run_config.prior.num_codebooks} x {run_config.prior.codebook_size}; retrain or re-export the prior"
        )
    if not isinstance(tokens.get("frame_rate"), (int, float)) or isinstance(tokens.get("frame_rate"), bool):
        raise ModelFileError(f"{where}:tokens: no frame_rate; retrain or re-export the prior")
    return run_config


def _prior_shapes(meta: dict[str, Any], weights: Path) -> ExpectedTensors:
    """The tensors (name -> shape) the description's config makes, from a network built on the meta device."""
    run_config = _saved_config(meta, weights)
    with torch.device("meta"):
        model = WaveNetPrior(run_config.prior)
    return ExpectedTensors({name: tuple(tensor.shape) for name, tensor in model.state_dict().items()})


def describe(meta: Mapping[str, Any]) -> str:
    """A few lines about a prior model file (``config.json`` contents), for ``vqaudio info``."""
    run = from_dict(PriorRunConfig, meta.get("config"), where="config")
    config: PriorConfig = run.prior
    tokens = meta.get("tokens") or {}
    frame_rate = float(tokens.get("frame_rate") or 0.0)
    field = receptive_field(config)
    seconds = f" = {field / frame_rate:.2f} s at {frame_rate:g} Hz" if frame_rate else ""
    dilation_list = dilations(config)
    parameters = meta.get("num_parameters")
    lines = [
        f"WaveNet token prior{' ' + repr(meta.get('name')) if meta.get('name') else ''}: "
        f"{config.num_cycles} cycle(s) x {config.layers_per_cycle} layers "
        f"(dilations 1..{max(dilation_list)}), "
        f"kernel {config.kernel_size}, {config.residual_channels} residual / {config.skip_channels} skip / "
        f"{config.head_channels} head channels"
        + (f", {parameters / 1e6:.2f} M parameters" if isinstance(parameters, int) else ""),
        f"receptive field: {field} frames{seconds}",
        f"tokens: {config.num_codebooks} codebooks x {config.codebook_size} codes, each frame's codebooks "
        "predicted in order from the past frames and the frame's earlier codebooks"
        + (" (each head also reads its codebook's previous code)" if config.previous_code_in_head else ""),
        f"tokenizer: {tokens.get('tokenizer_name')} (hash {str(tokens.get('tokenizer_hash'))[:12]})",
        f"weights licence: {meta.get('license') or 'not recorded (ask whoever trained the model)'}",
    ]
    if config.num_conditions:
        speakers = meta.get("speakers") or []
        lines.append(
            f"conditioning: {config.num_conditions} speakers "
            f"({', '.join(speakers[:5])}{', ...' if len(speakers) > 5 else ''})"
        )
    training = meta.get("training") or {}
    if training.get("step") is not None:
        valid = training.get("valid_bits_per_token")
        lines.append(
            f"trained: {training['step']} steps"
            + (f", validation {valid:.3f} bits per token" if isinstance(valid, (int, float)) else "")
        )
    # the whole record, one entry a line (its token stream and speakers are shown above)
    lines += [
        f"  {key}: {one_line(value)}" for key, value in training.items() if key not in ("tokens", "speakers")
    ]
    lines.append(
        f"weights: {meta.get('weights_dtype', 'float32')} on disk, sha256 {meta.get('weights_sha256')}"
    )
    return "\n".join(lines)
