"""The ``vqaudio`` command: parse, call the library, map errors to exit codes.

Exit codes, the same for every command:

    0    success.
    2    usage: the command line does not parse, whatever the files hold: an unknown command or option, a
         missing argument, a value not of the option's type or below the minimum its --help shows, options
         that exclude each other, a value of the wrong form (--shard K/N, OUT.npy), a --device that is
         misspelt or absent on this machine. Click prints the usage and the error; nothing is done.
    1    data or runtime: the command line parses but what it names cannot be used: a missing, unreadable or
         corrupt file, a recipe or --set value, a model, an existing output without --overwrite, a value
         beyond vqaudio's limits or that does not fit the model or data (--n-q above the model's codebooks,
         --seconds 1e12), a full disk. One line "error: ...", naming the file or option and the fix: the
         library raises these as ``vqaudio.errors.VQAudioError`` (``InputError`` for values) or as an
         OSError naming a file; running out of memory (CPU or GPU) is one line too. Any other exception is
         a bug in vqaudio: one line "error: internal error, a bug in vqaudio (...)" with the hint to rerun
         with --debug, which shows the traceback (as it does for every error).
    130  interrupted by Ctrl-C (SIGINT), 143 by SIGTERM: one line says what was stopped and what was written.

The global flags --debug and -q/--quiet may also follow the command (``vqaudio tokenize in/ out.npy -q``).
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
    rich_markup_mode=None,  # help text as written: "[n_q, frames]" is not markup
)

_debug = False
GLOBAL_FLAGS = ("--debug", "--quiet", "-q")  # the root's options, also accepted after the command
BUG_HINT = "rerun with --debug for the traceback, and please report it"
MEMORY_HINT = (
    "process less at once (--batch-size, --chunk-seconds, train.batch_size), or use another --device"
)


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
    """Add every command to the app, once (main() runs many times in one process under the tests)."""
    from vqaudio.cli import (
        compress_cmds,
        data_cmds,
        demo_cmd,
        eval_cmds,
        export_cmd,
        onnx_cmd,
        prior_cmds,
        probe_cmds,
        serve_cmd,
        tokenizer_cmds,
        train_cmd,
    )

    if app.registered_commands:
        return
    for module in (
        demo_cmd,
        tokenizer_cmds,
        compress_cmds,
        train_cmd,
        data_cmds,
        eval_cmds,
        probe_cmds,
        prior_cmds,
        export_cmd,
        onnx_cmd,
        serve_cmd,
    ):
        module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code (the rule is in the module docstring).

    Typer handles usage errors itself (exit 2); the library's own errors, and OS errors naming a file, are
    printed here on one line (exit 1); anything else is reported as a bug (exit 1, traceback with --debug).
    Ctrl-C and SIGTERM stop a command the same way (every temporary is removed, an existing output is kept):
    one line says what was stopped and what was written, exit 130 / 143.
    """
    from vqaudio.io.atomic import interrupted_message, reset_outputs

    _register_commands()
    args = hoist_global_flags(sys.argv[1:] if argv is None else list(argv))
    words = [arg for arg in args if not arg.startswith("-")][:2]
    command = " ".join(words if words[:1] == ["prior"] else words[:1])
    received: list[int] = []
    reset_outputs()
    previous = _install_signal_handlers(received)
    try:
        app(args=args, prog_name="vqaudio")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code == 130 and received:
            print(interrupted_message(received[-1], command), file=sys.stderr)
            return 128 + received[-1]
        return code
    except (VQAudioError, FileExistsError, FileNotFoundError) as exc:
        if _debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a write or read the library did not name: still one line with the path
        if _debug:
            raise
        if not exc.filename:
            return _report_bug(exc)
        print(f"error: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:  # an optional dependency (tensorboard, an extra's package)
        if _debug:
            raise
        print(f"error: {exc}: install the missing package and run the command again", file=sys.stderr)
        return 1
    except Exception as exc:
        if _debug:
            raise
        if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":  # torch's, CPU or GPU
            print(f"error: out of memory ({_first_line(exc)}); {MEMORY_HINT}", file=sys.stderr)
            return 1
        return _report_bug(exc)
    finally:
        _restore_signal_handlers(previous)
    return 0


def _report_bug(exc: BaseException) -> int:
    """One line for an exception that is not the user's doing (exit 1); ``--debug`` shows its traceback."""
    detail = f"{type(exc).__name__}: {_first_line(exc)}" if str(exc).strip() else type(exc).__name__
    print(f"error: internal error, a bug in vqaudio ({detail}); {BUG_HINT}", file=sys.stderr)
    return 1


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def hoist_global_flags(args: list[str]) -> list[str]:
    """Move --debug and -q/--quiet given after the command to the front, where the root parses them:
    ``vqaudio tokenize a.wav t.npy -q`` runs as ``vqaudio -q tokenize a.wav t.npy``.

    A flag is left in place when the command has an option of that name, when it is the value of the option
    before it (``--set -q``), or after ``--`` (which ends the options).
    """
    if not any(arg in GLOBAL_FLAGS for arg in args):
        return args
    group: Any = typer.main.get_command(app)  # typer's click objects (typer may bundle its own click)
    options: dict[str, Any] = {}  # the command's own parameters by name, once it is known
    hoisted: list[str] = []
    rest: list[str] = []
    in_command = expects_value = False
    for index, arg in enumerate(args):
        if arg == "--":
            rest += args[index:]
            break
        if not in_command:  # the root's options and the (sub)command names
            if arg in GLOBAL_FLAGS:  # also after a group's name (vqaudio prior -q train ...)
                hoisted.append(arg)
                continue
            rest.append(arg)
            if not arg.startswith("-"):
                found = group.get_command(None, arg)
                if found is None:  # not a command: click reports it
                    rest += args[index + 1 :]
                    break
                group = found
                if not hasattr(found, "get_command"):  # a command, not a group
                    in_command = True
                    options = {name: param for param in found.params for name in param.opts}
            continue
        if expects_value:
            expects_value = False
        elif arg in GLOBAL_FLAGS and arg not in options:
            hoisted.append(arg)
            continue
        elif arg in options:
            option = options[arg]
            expects_value = option.param_type_name == "option" and not option.is_flag
        rest.append(arg)
    return hoisted + rest


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
