"""``vqaudio serve``: the tokenizer as an HTTP service on this machine (``vqaudio.serve``).

Binds to 127.0.0.1 unless ``--host`` says otherwise; the service has no authentication. Stops on Ctrl-C or
SIGTERM after finishing the requests in flight (exit 130 / 143, the rule of ``vqaudio.cli.main``).
"""

from __future__ import annotations

import ipaddress
import logging
import os

import typer

from vqaudio.cli.options import device_option, parse_device

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"


def serve_command(
    model: str | None = typer.Option(
        None, "--model", help="Model folder or file (default: the embedded model)."
    ),
    host: str = typer.Option(
        DEFAULT_HOST,
        "--host",
        help="Address to listen on. The default answers this machine only; 0.0.0.0 opens the service, which has "
        "no authentication, to the network.",
    ),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port (0: a free one, printed)."),
    device: str = device_option(),
    max_seconds: float = typer.Option(
        60.0, "--max-seconds", help="Audio per request, uploaded or decoded from codes (longer: 413)."
    ),
    max_bytes: int = typer.Option(
        16 * 1024 * 1024, "--max-bytes", help="Bytes per request body (larger: 413, before it is read)."
    ),
    max_concurrency: int = typer.Option(
        8,
        "--max-concurrency",
        help="Requests admitted at once, receiving, waiting or running; one more gets 429. Bounds memory.",
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="Model calls at once (threads)."),
    threads: int = typer.Option(
        0, "--threads", min=0, help="torch threads per model call (0: the CPU cores divided by --workers)."
    ),
    body_timeout: float = typer.Option(
        30.0, "--body-timeout", help="Seconds a client has to send a request body (slower: 408)."
    ),
) -> None:
    """Serve the tokenizer over HTTP: /v1/tokenize, /v1/resynth, /v1/compress, /v1/info, /healthz, and a page at /."""
    from vqaudio.optional import require

    require("fastapi", "serve", "vqaudio serve")
    require("uvicorn", "serve", "vqaudio serve")

    import torch

    from vqaudio.codec.tokenizer import Tokenizer
    from vqaudio.config import THREADS, check_value
    from vqaudio.errors import InputError
    from vqaudio.serve.app import bind, create_app, run_server
    from vqaudio.serve.service import ServeLimits, Service

    limits = ServeLimits(
        max_bytes=max_bytes,
        max_seconds=max_seconds,
        max_concurrency=max_concurrency,
        workers=workers,
        body_timeout=body_timeout,
    )
    check_value("--threads", threads, THREADS)
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // workers))
    try:
        sock = bind(host, port)  # before the model is loaded: a port in use is said at once
    except OSError as exc:
        raise InputError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port or --host"
        ) from exc
    with sock:
        tok = Tokenizer.load(model, device=parse_device(device))
        app = create_app(Service(tok, limits))
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        if not _is_loopback(bound_host):
            log.warning(
                "listening on %s: reachable from other machines, and the service has no authentication", host
            )
        log.info(
            "model %s (%s), %d torch thread(s) x %d worker(s); limits: %d bytes, %g s of audio, %d requests at once",
            tok.name,
            tok.hash[:12],
            torch.get_num_threads(),
            limits.workers,
            limits.max_bytes,
            limits.max_seconds,
            limits.max_concurrency,
        )
        typer.echo(f"serving on http://{shown}:{bound_port}/ (the page; the API under /v1/)")
        run_server(app, sock)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def register(app: typer.Typer) -> None:
    """Add ``vqaudio serve`` to the app."""
    app.command("serve")(serve_command)
