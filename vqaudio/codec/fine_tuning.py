"""What a codec run may change about the weights it starts from: --init-from, freezing, and resuming.

A run starts from saved weights in two ways. ``--init-from`` loads a released tokenizer into a new run
(fine-tuning, e.g. adversarial training of a model trained without it: recipes/rvq_mel_gan.yaml): the
architecture must be the recipe's, except for settings that only steer how codebooks train
(``TRAINING_ONLY_MODEL_FIELDS``) and modules that may be switched on over a model trained without them
(``ADDED_MODULES``). Resuming a checkpoint reads the architecture back from it (as nanoGPT does) and takes the
recipe's loss and training settings, listing what changed. ``train.freeze`` keeps parts of the model as they
were loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vqaudio.codec.quantization import Codebook
from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.codec.vqvae import VQVAE
from vqaudio.config import Config, ConfigError, from_dict, to_dict
from vqaudio.training.checkpoint import CHECKPOINT_FILE

log = logging.getLogger(__name__)

# Model-config fields that steer how a codebook trains, not what the weights are or how they are used: a
# fine-tuning run may change them.
TRAINING_ONLY_MODEL_FIELDS = frozenset(
    f"model.quantizer.{name}"
    for name in (
        "commitment_weight",
        "codebook_weight",
        "ema_decay",
        "laplace_epsilon",
        "kmeans_init",
        "kmeans_iters",
        "dead_code_steps",
        "usage_entropy_weight",
        "gumbel_temperature_start",
        "gumbel_temperature_end",
        "gumbel_anneal_steps",
        "gumbel_anneal",
        "quantizer_dropout",
    )
)


# Model-config fields a fine-tuning run may switch on over a model trained without them: the modules they add
# start from their own initialisation (which leaves the output unchanged), every other weight is loaded.
ADDED_MODULES = {
    "model.decoder.istft_excitation": ("decoder.head.harmonic_filter.", "decoder.head.pitch."),
    "model.pitch.levels": ("pitch_embedding.",),  # a pitch row (with the excitation it drives)
}


# --------------------------------------------------------------------------------------------------
# --init-from and train.freeze
# --------------------------------------------------------------------------------------------------
def initialise_from(model: VQVAE, config: Config, path: str | Path) -> dict[str, Any]:
    """Load a released tokenizer's weights into ``model`` (same architecture, or the same plus modules in
    ``ADDED_MODULES``; ``"default"``: the embedded model); returns its provenance."""
    source = Tokenizer.from_pretrained(path)
    differences = config_differences(source.config.model, config.model, "model")
    training_only = [d for d in differences if d.split(":")[0] in TRAINING_ONLY_MODEL_FIELDS]
    added = [d for d in differences if d.split(":")[0] in ADDED_MODULES]
    differences = [d for d in differences if d not in training_only and d not in added]
    if training_only:
        log.info("--init-from %s: training settings changed (%s)", path, "; ".join(training_only))
    if differences:
        raise ConfigError(
            f"--init-from {path}: its architecture differs from the recipe's ({'; '.join(differences[:3])}); "
            "fine-tune with the recipe it was trained with"
        )
    new_prefixes = tuple(prefix for d in added for prefix in ADDED_MODULES[d.split(":")[0]])
    keys = model.load_state_dict(source.model.state_dict(), strict=not added)
    if keys.unexpected_keys or any(not key.startswith(new_prefixes) for key in keys.missing_keys):
        raise ConfigError(
            f"--init-from {path}: {'; '.join(added)} can only be added to a model, not removed from one"
        )
    if added:
        log.info("--init-from %s: new modules start untrained (%s)", path, "; ".join(added))
    training = source.training or {}
    log.info("starting from the weights of %s (%s, %s steps)", path, source.name, training.get("steps", "?"))
    return {
        "path": str(path),
        "name": source.name,
        "weights_sha256": source.hash,
        "steps": training.get("steps"),
        "recipe": training.get("recipe"),
    }


def freeze(model: VQVAE, parts: Sequence[str]) -> None:
    """No gradients for the ``train.freeze`` parts of ``model`` (``"encoder"``, ``"quantizer"``)."""
    for part in parts:
        getattr(model, part).requires_grad_(False)


def keep_frozen_in_eval(model: VQVAE, parts: Sequence[str]) -> None:
    """Put the frozen parts of a model in training mode back in eval mode, so they do not change either."""
    if "encoder" in parts:
        model.encoder.eval()
    if (
        "quantizer" in parts
    ):  # no codebook statistics, restarts, k-means or Gumbel noise; dropout still applies
        for module in model.quantizer.modules():
            if isinstance(module, Codebook):
                module.eval()


# --------------------------------------------------------------------------------------------------
# Resuming a checkpoint
# --------------------------------------------------------------------------------------------------
def same_architecture(checkpoint: dict[str, Any], config: Config, out: Path, overwrite: bool) -> bool:
    """Whether the checkpoint in ``out`` may be resumed with ``config``: the same architecture (else: start
    over with ``overwrite``, refuse without)."""
    saved = _saved_config(checkpoint, out / CHECKPOINT_FILE)
    differences = config_differences(saved.model, config.model, "model")
    if not differences:
        return True
    if not overwrite:
        raise ConfigError(
            f"{out} holds a run of another architecture ({'; '.join(differences[:4])}"
            f"{' ...' if len(differences) > 4 else ''}); resume it with the recipe it was started with, "
            "choose another --out, or pass --overwrite to start over"
        )
    log.warning(
        "%s: the recipe's architecture differs from the checkpoint's; starting over (--overwrite)", out
    )
    return False


def _saved_config(checkpoint: dict[str, Any], where: Path) -> Config:
    try:
        return from_dict(Config, checkpoint["config"], where=f"{where} config")
    except (ConfigError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"{where}: the saved config cannot be read by this vqaudio ({exc}); start over with --overwrite"
        ) from exc


def resumed_config(checkpoint: dict[str, Any], recipe: Config, out: Path) -> Config:
    """The checkpoint's architecture with the recipe's loss and training settings (changes listed)."""
    saved = _saved_config(checkpoint, out / CHECKPOINT_FILE)
    changed = config_differences(saved.loss, recipe.loss, "loss") + config_differences(
        saved.train, recipe.train, "train"
    )
    if changed:
        log.warning("resuming with changed settings: %s", "; ".join(changed))
    return Config(model=saved.model, loss=recipe.loss, train=recipe.train)


def warn_about_changed_data(saved_run: dict[str, Any], run: dict[str, Any]) -> None:
    """Warn when a resumed run is given another --data, --valid or --phones than it was started with."""
    for key in ("data", "valid", "phones"):
        if key in saved_run and key in run and saved_run[key] != run[key]:
            log.warning("resuming with --%s %s (the run was started with %s)", key, run[key], saved_run[key])


def config_differences(saved: Any, new: Any, prefix: str) -> list[str]:
    """``["model.latent_dim: 32 -> 64", ...]`` for the fields where two configs differ."""
    differences: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{path}.{key}")
        elif a != b:
            differences.append(f"{path}: {a!r} -> {b!r}")

    walk(to_dict(saved), to_dict(new), prefix)
    return differences
