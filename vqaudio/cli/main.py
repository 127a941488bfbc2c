"""The ``vqaudio`` command: parse, call the library, map errors to exit codes.

Exit codes: 0 success, 1 a runtime problem with the user's data or files (one line, no traceback unless
``--debug``), 2 a usage error, 130 interrupted.
"""

from __future__ import annotations

import logging
import os
import sys

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
    from vqaudio.cli import data_cmds, demo_cmd, eval_cmds, prior_cmds, tokenizer_cmds, train_cmd

    for module in (demo_cmd, tokenizer_cmds, train_cmd, data_cmds, eval_cmds, prior_cmds):
        module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code.

    Typer handles usage errors itself (exit 2) and turns Ctrl-C into "Aborted!" (exit 1); the
    library's own errors are printed here on one line.
    """
    _register_commands()
    try:
        app(args=argv, prog_name="vqaudio")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except (VQAudioError, ValueError, FileExistsError, FileNotFoundError) as exc:
        if _debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
