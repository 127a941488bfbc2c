"""Old import paths of modules that moved in 0.2, kept working for one release.

``import vqaudio.tokenizer`` still gives ``vqaudio.codec.tokenizer`` (the same module object, so classes
and functions are identical) and warns once with the new path. Remove this table in the release after 0.2.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType

# old module (or package prefix) -> new module; a package entry also maps its submodules
MOVED: dict[str, str] = {
    "vqaudio.audio": "vqaudio.io.audio",
    "vqaudio.serialization": "vqaudio.io.model_file",
    "vqaudio.tokenfile": "vqaudio.io.token_file",
    "vqaudio.model": "vqaudio.codec.vqvae",
    "vqaudio.tokenizer": "vqaudio.codec.tokenizer",
    "vqaudio.corpus_coding": "vqaudio.codec.corpus_coding",
    "vqaudio.losses": "vqaudio.codec.losses",
    "vqaudio.pitch": "vqaudio.codec.pitch",
    "vqaudio.quantization": "vqaudio.codec.quantization",
    "vqaudio.modules": "vqaudio.codec",
    "vqaudio.training.trainer": "vqaudio.codec.training",
    "vqaudio.training.validation": "vqaudio.codec.validation",
    "vqaudio.training.codebook_stats": "vqaudio.evaluation.codebook_stats",
    "vqaudio.prior.model": "vqaudio.prior.prior",
    "vqaudio.prior.sampling": "vqaudio.prior.audio_io",
}


def new_name(old: str) -> str | None:
    """The module that ``old`` moved to, or None when it did not move."""
    if old in MOVED:
        return MOVED[old]
    head, _, tail = old.rpartition(".")
    while head:
        if head in MOVED:
            return f"{MOVED[head]}.{old[len(head) + 1 :]}"
        head, _, _ = head.rpartition(".")
    return None


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers imports of an old path with the module at its new path."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("vqaudio.") or new_name(fullname) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # a placeholder; exec_module swaps in the real module

    def exec_module(self, module: ModuleType) -> None:
        old = module.__name__
        new = new_name(old)
        assert new is not None
        warnings.warn(
            f"{old} moved to {new}; the old path works until the release after 0.2 (docs/ARCHITECTURE.md)",
            DeprecationWarning,
            stacklevel=2,
        )
        # importlib returns whatever sys.modules holds under the name once exec_module is done
        sys.modules[old] = importlib.import_module(new)


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MovedModuleFinder())
