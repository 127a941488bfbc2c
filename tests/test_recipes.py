"""Recipes: ``base:`` inheritance in vqaudio.config.load_yaml, and the shipped recipes in recipes/."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from vqaudio.config import (
    RETIRED_KEYS,
    Config,
    ConfigError,
    PriorRunConfig,
    from_dict,
    load_yaml,
    to_dict,
)

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
# The resolved configs of the recipes rewritten as children of a base, written with to_dict(load_yaml(...)) from
# the full files they replaced (main at 7439a2c). The stages of the embedded tokenizer and prior are records
# of runs: an edit to a base that changes one of them fails here, and must be deliberate. The keys of the options
# retired in 0.2 (vqaudio.config.RETIRED_KEYS) were removed from these files; all of them were off there.
# rvq_mel_pitch and rvq_mel_pitch_envelope are the configs of the two runs that made the embedded tokenizer
# (their config.json, less the command line's train.num_threads); prior_default's max_steps is the embedded
# prior's schedule (5,000 steps, in one schedule since 2f500ec8f7eb).
PINNED = Path(__file__).parent / "data" / "recipes"


def recipe_class(path: Path) -> type:
    return PriorRunConfig if path.name.startswith("prior_") else Config


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"latent_dim": 128}} -> {"model.latent_dim": 128}."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------------
# The shipped recipes
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pinned", sorted(PINNED.glob("*.json")), ids=lambda path: path.stem)
def test_rewritten_recipes_resolve_to_the_full_files_they_replaced(pinned: Path) -> None:
    recipe = RECIPES / f"{pinned.stem}.yaml"
    resolved = flatten(to_dict(load_yaml(recipe, recipe_class(recipe))))
    expected = flatten(json.loads(pinned.read_text()))
    # every pinned field; a field added to the dataclasses later keeps its default in both and is not pinned
    assert {key: resolved.get(key, "<missing>") for key in expected} == expected


def test_the_rewritten_recipes_are_children_and_pinned() -> None:
    children = ["rvq_mel_envelope", "rvq_mel_spread20", "rvq_mel_spread50", "rvq_mel_gan", "group_waveform"]
    children += ["prior_default", "rvq_mel_pitch", "rvq_mel_pitch_envelope"]
    for name in children:
        assert "base" in yaml.safe_load((RECIPES / f"{name}.yaml").read_text()), name
    # rvq_mel.yaml only lost comments, pinned all the same
    assert {path.stem for path in PINNED.glob("*.json")} == {*children, "rvq_mel"}


@pytest.mark.parametrize(("stage", "weight"), [("rvq_mel_spread20", 20.0), ("rvq_mel_spread50", 50.0)])
def test_spreading_stages_are_the_envelope_stage_plus_one_override(stage: str, weight: float) -> None:
    """The embedded model's runs were rvq_mel_envelope.yaml with --set model.quantizer.usage_entropy_weight."""
    text = yaml.safe_load((RECIPES / f"{stage}.yaml").read_text())
    assert text == {"base": "rvq_mel_envelope.yaml", "model": {"quantizer": {"usage_entropy_weight": weight}}}


def test_the_gpu_recipe_is_rvq_mel_pitch_with_only_its_training_scaled() -> None:
    """Same model and losses as the embedded first stage; the header's arithmetic holds: 8 processes of
    batch_size crops, the learning rate half the square-root scaling with the total batch."""
    recipe = RECIPES / "rvq_mel_pitch_gpu.yaml"
    assert set(yaml.safe_load(recipe.read_text())) == {"base", "train"}
    gpu, cpu = load_yaml(recipe, Config), load_yaml(RECIPES / "rvq_mel_pitch.yaml", Config)
    assert (gpu.model, gpu.loss) == (cpu.model, cpu.loss)
    ratio = 8 * gpu.train.batch_size / cpu.train.batch_size
    assert gpu.train.learning_rate == pytest.approx(0.5 * cpu.train.learning_rate * ratio**0.5)
    assert gpu.train.precision == "bf16" and gpu.train.warmup_steps < gpu.train.max_steps


@pytest.mark.parametrize(
    "recipe",
    sorted(RECIPES.glob("*.yaml")) + sorted(REPO.glob("egs/*/conf/*.yaml")),
    ids=lambda path: f"{path.parent.name}/{path.stem}",
)
def test_every_recipe_loads(recipe: Path) -> None:
    config: object = load_yaml(recipe, recipe_class(recipe))
    if isinstance(config, Config):
        config.model.validate()
    if recipe.parent == RECIPES:
        assert "README" not in recipe.read_text(), "recipes point at docs/EXPERIMENTS.md, not at README prose"


# --------------------------------------------------------------------------------------------------
# base: semantics
# --------------------------------------------------------------------------------------------------
def test_a_child_merges_nested_mappings_and_replaces_lists(tmp_path: Path) -> None:
    write(
        tmp_path,
        "parent.yaml",
        "model:\n  latent_dim: 64\n  encoder:\n    channels: 16\n    strides: [2, 4, 5, 8]\n"
        "loss:\n  stft_fft_sizes: [256, 512, 1024]\ntrain:\n  max_steps: 50\n",
    )
    child = write(
        tmp_path,
        "child.yaml",
        "base: parent.yaml\nmodel:\n  encoder:\n    channels: 24\nloss:\n  stft_fft_sizes: [128]\n",
    )
    config = load_yaml(child, Config)
    assert config.model.encoder.channels == 24  # the child's
    assert config.model.encoder.strides == (2, 4, 5, 8)  # the parent's, beside it in the same mapping
    assert config.model.latent_dim == 64 and config.train.max_steps == 50  # the parent's other sections
    assert config.loss.stft_fft_sizes == (128,)  # a list replaces the parent's whole list
    assert config.train.batch_size == Config().train.batch_size  # neither file: the default


def test_a_chain_of_bases_resolves_nearest_first_and_relative_to_each_file(tmp_path: Path) -> None:
    write(tmp_path, "shared/root.yaml", "train:\n  max_steps: 10\n  batch_size: 2\n  seed: 7\n")
    write(tmp_path, "shared/middle.yaml", "base: root.yaml\ntrain:\n  max_steps: 20\n  batch_size: 3\n")
    leaf = write(tmp_path, "runs/leaf.yaml", "base: ../shared/middle.yaml\ntrain:\n  max_steps: 30\n")
    train = load_yaml(leaf, Config).train
    assert (train.max_steps, train.batch_size, train.seed) == (30, 3, 7)


def test_prior_recipes_inherit_too(tmp_path: Path) -> None:
    write(tmp_path, "parent.yaml", "prior:\n  residual_channels: 32\n  num_cycles: 3\n")
    child = write(tmp_path, "child.yaml", "base: parent.yaml\nprior:\n  residual_channels: 8\n")
    prior = load_yaml(child, PriorRunConfig).prior
    assert (prior.residual_channels, prior.num_cycles) == (8, 3)


def test_a_cycle_of_bases_is_an_error_naming_the_files(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "base: b.yaml\ntrain:\n  max_steps: 1\n")
    write(tmp_path, "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"cycle \(.*a\.yaml -> .*b\.yaml -> .*a\.yaml\); remove base:"):
        load_yaml(tmp_path / "a.yaml")
    write(tmp_path, "self.yaml", "base: ./self.yaml\n")
    with pytest.raises(ConfigError, match=r"self\.yaml -> .*self\.yaml"):
        load_yaml(tmp_path / "self.yaml")


def test_a_missing_base_is_an_error_naming_the_path(tmp_path: Path) -> None:
    child = write(tmp_path, "child.yaml", "base: rvq_mell.yaml\n")
    with pytest.raises(ConfigError) as caught:
        load_yaml(child)
    message = str(caught.value)
    assert str(tmp_path / "rvq_mell.yaml") in message and "not found" in message
    assert "relative to the recipe's own folder" in message and message.startswith(str(child))


@pytest.mark.parametrize("value", ["[rvq_mel.yaml]", "3", "null", "''"])
def test_base_must_be_a_file_name(tmp_path: Path, value: str) -> None:
    child = write(tmp_path, "child.yaml", f"base: {value}\n")
    with pytest.raises(ConfigError, match="base must be the file name of another recipe"):
        load_yaml(child)


def test_unknown_keys_are_still_rejected_and_the_file_named(tmp_path: Path) -> None:
    write(tmp_path, "parent.yaml", "train:\n  max_steps: 10\n")
    child = write(tmp_path, "child.yaml", "base: parent.yaml\ntrain:\n  max_step: 20\n")
    with pytest.raises(ConfigError, match=r"child\.yaml\.train: unknown key\(s\) \['max_step'\]"):
        load_yaml(child)
    write(tmp_path, "typo.yaml", "model:\n  latnet_dim: 64\n")
    child = write(tmp_path, "child2.yaml", "base: typo.yaml\n")
    with pytest.raises(ConfigError, match=r"typo\.yaml\.model: unknown key\(s\) \['latnet_dim'\]"):
        load_yaml(child)
    nested = write(tmp_path, "nested.yaml", "base: parent.yaml\nmodel:\n  base: parent.yaml\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['base'\]"):  # only the top level's base
        load_yaml(nested)


# --------------------------------------------------------------------------------------------------
# Retired keys: saved configs of earlier versions still load
# --------------------------------------------------------------------------------------------------
def test_retired_keys_at_their_off_values_load_as_if_absent(tmp_path: Path) -> None:
    old = write(
        tmp_path,
        "old.yaml",
        "model:\n  encoder:\n    pitch_features: false\n  quantizer:\n    rare_code_fraction: 0\n"
        "loss:\n  phase_weight: 0.0\n  phase_n_fft: 512\n  phase_hop_length: 128\n",
    )
    assert load_yaml(old) == Config()
    # the settings of the phase loss load whatever their value while the loss is absent (it was off)
    assert from_dict(Config, {"loss": {"phase_n_fft": 2048}}) == Config()
    saved = to_dict(Config())
    saved["model"]["encoder"]["pitch_features"] = False
    saved["loss"].update(phase_weight=0.0, phase_n_fft=1024, phase_hop_length=256)
    assert from_dict(Config, saved) == Config()


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("loss", "phase_weight", 0.5),
        ("model.encoder", "pitch_features", True),
        ("model.quantizer", "rare_code_fraction", 0.1),
        ("loss", "phase_weight", False),  # not the number 0
    ],
)
def test_a_retired_key_that_switched_its_option_on_is_an_error(section: str, key: str, value: Any) -> None:
    data: dict[str, Any] = {key: value}
    for name in reversed(section.split(".")):
        data = {name: data}
    message = (
        f"`{section}.{key}` was retired in 0.2 (measured not to help: docs/EXPERIMENTS.md); "
        f"remove it from old.yaml.{section}"
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_dict(Config, data, where="old.yaml")
    # its settings do not hide it
    if key == "phase_weight":
        with pytest.raises(ConfigError, match="`loss.phase_weight` was retired"):
            from_dict(Config, {"loss": {"phase_n_fft": 512, key: value}})


def test_retired_keys_are_gone_from_the_dataclasses_and_recorded() -> None:
    experiments = (REPO / "docs" / "EXPERIMENTS.md").read_text()
    for cls, keys in RETIRED_KEYS.items():
        fields = {field.name for field in dataclasses.fields(cls)}
        for key, retired in keys.items():
            assert key not in fields and retired.path.endswith(f".{key}")
            assert f"`{retired.path}`" in experiments, retired.path


def test_a_recipe_that_is_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_yaml(write(tmp_path, "list.yaml", "- base: parent.yaml\n"))
