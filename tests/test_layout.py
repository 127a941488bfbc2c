"""The package's shape: no import cycles, and the old (0.1) module paths still import for one release."""

from __future__ import annotations

import ast
import importlib
import sys
import warnings
from pathlib import Path

import pytest

from vqaudio import _moved

PACKAGE = Path(__file__).resolve().parents[1] / "vqaudio"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path, modules: set[str]) -> set[str]:
    """vqaudio modules that ``path`` imports when it is imported (not inside functions or TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found.update(name for name in names if name in modules)
    return found


def test_no_import_cycles() -> None:
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    modules = set(paths)
    graph = {name: _top_level_imports(path, modules) - {name} for name, path in paths.items()}
    # a package's __init__ runs before its submodules, so importing a.b also imports a
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycle = stack[stack.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


@pytest.mark.parametrize("old", sorted(_moved.MOVED))
def test_old_module_paths_still_import(old: str, monkeypatch: pytest.MonkeyPatch) -> None:
    new = _moved.MOVED[old]
    monkeypatch.delitem(sys.modules, old, raising=False)  # imported earlier in this session: import it anew
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    assert module is importlib.import_module(new)
    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught)


def test_old_public_names_resolve_to_the_same_objects() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from vqaudio.audio import atomic_path, load_audio
        from vqaudio.quantization.vq import VectorQuantizer
        from vqaudio.tokenfile import load_tokens
        from vqaudio.tokenizer import Tokenizer

    from vqaudio.codec.quantization.vq import VectorQuantizer as NewVectorQuantizer
    from vqaudio.codec.tokenizer import Tokenizer as NewTokenizer
    from vqaudio.io.atomic import atomic_path as new_atomic_path
    from vqaudio.io.audio import load_audio as new_load_audio
    from vqaudio.io.token_file import load_tokens as new_load_tokens

    assert (Tokenizer, VectorQuantizer, load_tokens) == (NewTokenizer, NewVectorQuantizer, new_load_tokens)
    assert (atomic_path, load_audio) == (new_atomic_path, new_load_audio)
