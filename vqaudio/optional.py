"""Optional dependencies: import them where a feature needs them, or say in one line which extra to install.

matplotlib (plots: ``vqaudio eval``, training spectrograms) and tensorboard (training logs) are extras, so a
plain ``pip install vqaudio`` stays small and ``vqaudio tokenize`` never imports plotting code.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from vqaudio.errors import VQAudioError


class MissingDependency(VQAudioError, ImportError):
    """A feature needs a package that is not installed; the message names the extra that brings it."""


def is_installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a broken module spec
        return False


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise MissingDependency: "<purpose> needs <package>: pip install 'vqaudio[extra]'"."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.split(".")[0]
        raise MissingDependency(
            f"{purpose} needs {package}, which is not installed: pip install 'vqaudio[{extra}]'"
        ) from exc
