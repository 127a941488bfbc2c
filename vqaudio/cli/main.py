"""The ``vqaudio`` command: parse, call the library, map errors to exit codes.

Exit codes: 0 success, 1 a runtime problem with the user's data or files (one line, no traceback unless
``--debug``), 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import Any

import typer

from vqaudio.errors import VQAudioError

app = typer.Typer(
    name="vqaudio",
    help="Speech to discrete tokens and back: train, tokenize, resynthesize, evaluate, model token sequences.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_debug = False


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors on the console."),
) -> None:
    global _debug
    _debug = debug or bool(os.environ.get("VQAUDIO_DEBUG"))
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(message)s" if not _debug else "%(asctime)s %(name)s %(levelname)s: %(message)s",
        stream=sys.stderr,
    )


def _register_commands() -> None:
    from vqaudio.cli import data_cmds, demo_cmd, eval_cmds, prior_cmds, probe_cmds, tokenizer_cmds, train_cmd

    for module in (demo_cmd, tokenizer_cmds, train_cmd, data_cmds, eval_cmds, probe_cmds, prior_cmds):
        module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code.

    Typer handles usage errors itself (exit 2); the library's own errors, and OS errors naming a file, are
    printed here on one line. Ctrl-C and SIGTERM stop a command the same way (every temporary is removed,
    an existing output is kept): one line says what was stopped and what was written, exit 130 / 143.
    """
    from vqaudio.io.atomic import interrupted_message, reset_outputs

    _register_commands()
    args = sys.argv[1:] if argv is None else argv
    words = [arg for arg in args if not arg.startswith("-")][:2]
    command = " ".join(words if words[:1] == ["prior"] else words[:1])
    received: list[int] = []
    reset_outputs()
    previous = _install_signal_handlers(received)
    try:
        app(args=argv, prog_name="vqaudio")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code == 130 and received:
            print(interrupted_message(received[-1], command), file=sys.stderr)
            return 128 + received[-1]
        return code
    except (VQAudioError, ValueError, FileExistsError, FileNotFoundError) as exc:
        if _debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a write or read the library did not name: still one line with the path
        if _debug or not exc.filename:
            raise
        print(f"error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        _restore_signal_handlers(previous)
    return 0


def _install_signal_handlers(received: list[int]) -> dict[int, Any]:
    """Ctrl-C raises KeyboardInterrupt and SIGTERM ``Terminated`` (a KeyboardInterrupt), so both run the
    same cleanups. Installed explicitly: a background job of a script inherits SIGINT ignored."""
    from vqaudio.io.atomic import Terminated

    if threading.current_thread() is not threading.main_thread():
        return {}

    def on_signal(signum: int, frame: Any) -> None:
        received.append(signum)
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore_signal_handlers(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
