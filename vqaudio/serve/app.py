"""``vqaudio serve``'s HTTP side: a FastAPI app around a ``Service``, and the uvicorn server that runs it.

A POST request goes through, in order:

    Content-Length over the endpoint's limit?  -> 413, before any byte of the body is read
    admission: max_concurrency requests in     -> 429 (Retry-After: 1), nothing queued beyond the limit (the
                                                  refused body is read and dropped first, so that the
                                                  client, still sending, sees the 429 and not a reset)
    the body, read up to the limit             -> 413 as soon as it passes (chunked bodies too);
                                                  408 when it takes longer than body_timeout
    the Service's work, in a worker thread     -> JSON, WAV or .vqa; its ServiceError -> 4xx / 501

so the memory held at once is bounded by max_concurrency bodies and their audio, and the model runs in at most
``workers`` threads. Every error is JSON ``{"error": {"code": 422, "message": "..."}}``.

The page (``GET /``, issue 30) is ``static/index.html`` with its script and style sheet, served from the package
under a Content-Security-Policy that allows nothing outside this origin.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from vqaudio._version import __version__
from vqaudio.serve.errors import ServiceError
from vqaudio.serve.service import Body, Reply, Service

# the page and what it loads: name -> media type (nothing else under /static/ exists)
STATIC_FILES = {"index.html": "text/html", "app.js": "text/javascript", "page.css": "text/css"}
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
N_Q_HELP = "Codebooks to use (residual models); none: all that are given (resynth) or the model's (tokenize)."


class Admission:
    """At most ``limit`` requests in at once; one more is refused, not queued. Used from the event loop only,
    so a plain counter is enough."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.finished = 0
        self.rejected = 0

    def enter(self) -> bool:
        """Admit one more request (True), or count it rejected (False)."""
        if self.in_flight >= self.limit:
            self.rejected += 1
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1
        self.finished += 1


def create_app(service: Service) -> FastAPI:
    """The HTTP app of ``service``: the endpoints, the limits, the page.

    The worker threads are started with the app's lifespan and joined when it ends (after the requests in
    flight, uvicorn's graceful shutdown).
    """
    limits = service.limits
    admission = Admission(limits.max_concurrency)
    executor: dict[str, ThreadPoolExecutor] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        executor["pool"] = ThreadPoolExecutor(limits.workers, thread_name_prefix="vqaudio-model")
        try:
            yield
        finally:
            executor.pop("pool").shutdown(wait=True)

    app = FastAPI(
        title="vqaudio",
        version=__version__,
        description="Speech to discrete tokens and back.",
        docs_url=None,  # FastAPI's docs pages load their scripts from a CDN; /openapi.json stays
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.admission = admission

    # ---------------------------------------------------------------------------------------------- errors
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        headers = {"Retry-After": "1"} if exc.status == 429 else None
        return error_response(exc.status, exc.message, headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{' '.join(str(part) for part in error.get('loc', ()))}: {error.get('msg')} (got {error.get('input')!r})"
            for error in exc.errors()
        ]
        return error_response(422, "; ".join(problems))

    @app.exception_handler(ClientDisconnect)
    async def disconnected(request: Request, exc: ClientDisconnect) -> JSONResponse:
        return error_response(400, "the client went away before sending its whole body")

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:  # uvicorn logs the traceback
        name = type(exc).__name__
        return error_response(
            500, f"internal error, a bug in vqaudio ({name}: {exc}); the server log has the traceback"
        )

    # ---------------------------------------------------------------------------------------------- work
    async def serve(request: Request, endpoint: str, work: Callable[[Body, bool], Reply]) -> Response:
        is_json = _is_json(request.headers.get("content-type"))
        limit = service.body_limit(endpoint, is_json)
        _check_declared_length(request.headers.get("content-length"), limit)
        if not admission.enter():
            # read (and drop) the body before answering: the connection of a client that sent "Connection:
            # close" (urllib does) is closed after the response, and one still sending would see a reset
            await _discard_body(request, limit, limits.body_timeout)
            raise ServiceError(
                429,
                f"the server is busy: {admission.limit} requests are in progress (its --max-concurrency); "
                "retry shortly",
            )
        try:
            body = await _read_body(request, limit, limits.body_timeout)
            reply = await asyncio.get_running_loop().run_in_executor(executor["pool"], work, body, is_json)
        finally:
            admission.leave()
        return _response(reply)

    @app.post("/v1/tokenize")
    async def tokenize(request: Request, n_q: int | None = Query(None, description=N_Q_HELP)) -> Response:
        """Audio (the bytes of a file soundfile reads) -> codes as JSON; or JSON {"instances": [{"b64": ...}]}
        -> {"predictions": [...]}."""
        return await serve(request, "tokenize", lambda body, is_json: service.tokenize(body, is_json, n_q))

    @app.post("/v1/resynth")
    async def resynth(
        request: Request,
        n_q: int | None = Query(None, description=N_Q_HELP),
        sample_format: str = Query("pcm16", description="The WAV's samples: pcm16 or float32."),
    ) -> Response:
        """Codes as JSON {"codes": [[...]]} (or a .vqa container) -> audio/wav; JSON {"instances": [{"codes":
        ...}]} -> {"predictions": [{"b64": WAV, ...}]}."""
        return await serve(
            request, "resynth", lambda body, is_json: service.resynth(body, is_json, n_q, sample_format)
        )

    @app.post("/v1/compress")
    async def compress(request: Request, n_q: int | None = Query(None, description=N_Q_HELP)) -> Response:
        """Audio -> a .vqa container (application/octet-stream); 501 where the container is not installed."""
        return await serve(request, "compress", lambda body, is_json: service.compress(body, is_json, n_q))

    @app.get("/v1/info")
    async def info() -> dict[str, Any]:
        """The model, the limits, and the requests in flight, finished (admitted, whatever their status) and
        rejected (429) so far."""
        load = {
            "in_flight": admission.in_flight,
            "finished": admission.finished,
            "rejected": admission.rejected,
        }
        return {**service.info(), "load": load}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # ---------------------------------------------------------------------------------------------- the page
    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return _static("index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)  # browsers ask for one; no icon, and no 404 in their console

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in STATIC_FILES:
            return error_response(404, f"/static/{name} does not exist")
        return _static(name)

    return app


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """``{"error": {"code": status, "message": message}}``."""
    return JSONResponse({"error": {"code": status, "message": message}}, status_code=status, headers=headers)


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _check_declared_length(header: str | None, limit: int) -> None:
    if header is None:
        return  # a chunked body: counted while it is read
    try:
        length = int(header)
    except ValueError:
        raise ServiceError(400, f"Content-Length is not a number: {header!r}") from None
    if length > limit:
        raise ServiceError(413, _over(length, limit))


def _over(length: int | str, limit: int) -> str:
    return (
        f"the request body of {length} bytes is over this endpoint's limit of {limit} bytes "
        "(GET /v1/info lists the limits); send less audio per request"
    )


async def _read_body(request: Request, limit: int, timeout: float) -> bytearray:
    """The body, refused (413) as soon as it passes ``limit`` bytes and (408) when not complete in ``timeout``
    seconds."""
    body = bytearray()

    async def receive() -> None:
        async for chunk in request.stream():
            if len(body) + len(chunk) > limit:
                raise ServiceError(413, _over(f"more than {limit}", limit))
            body.extend(chunk)

    try:
        await asyncio.wait_for(receive(), timeout)
    except asyncio.TimeoutError:
        raise ServiceError(
            408, f"the request body did not arrive within {timeout:g} s (the server's --body-timeout)"
        ) from None
    return body


async def _discard_body(request: Request, limit: int, timeout: float) -> None:
    """Read a refused request's body and keep none of it, for at most ``limit`` bytes and ``timeout`` seconds."""
    received = 0

    async def receive() -> None:
        nonlocal received
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                return

    try:
        await asyncio.wait_for(receive(), timeout)
    except (asyncio.TimeoutError, ClientDisconnect):
        pass


def _response(reply: Reply) -> Response:
    if isinstance(reply.body, dict):
        return JSONResponse(reply.body, headers=reply.headers)
    return Response(reply.body, media_type=reply.media_type, headers=reply.headers)


def _static(name: str) -> Response:
    text = resources.files("vqaudio.serve").joinpath("static", name).read_bytes()
    headers = {"Content-Security-Policy": PAGE_POLICY, "X-Content-Type-Options": "nosniff"}
    return Response(text, media_type=STATIC_FILES[name], headers=headers)


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------
def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one, read back with ``getsockname``).

    Raises:
        OSError: the address is in use or cannot be bound (the caller names the option to change).
    """
    family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, protocol)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def run_server(app: FastAPI, sock: socket.socket, shutdown_seconds: float = 30.0) -> None:
    """Serve ``app`` on the bound ``sock`` until Ctrl-C or SIGTERM; requests in flight are finished first
    (for at most ``shutdown_seconds``)."""
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level="warning",  # vqaudio logs what it serves; uvicorn only its problems
        access_log=False,
        timeout_graceful_shutdown=max(1, round(shutdown_seconds)),
        server_header=False,
    )
    uvicorn.Server(config).run(sockets=[sock])
