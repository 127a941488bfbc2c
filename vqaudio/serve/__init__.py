"""``vqaudio serve``: the tokenizer as an HTTP service (FastAPI + uvicorn), its page, and a Python client.

    vqaudio serve --model exp/run1                 # http://127.0.0.1:8000/ (the page), /v1/... (the API)

    from vqaudio.serve import Client
    client = Client("http://127.0.0.1:8000")
    tokens = client.tokenize("speech.wav", n_q=4)  # Tokens(codes [1 + n_q, F], ...)
    audio, sample_rate = client.resynth(tokens.codes)

The service needs the ``serve`` extra (``pip install 'vqaudio[serve]'``: fastapi, uvicorn); the client needs
nothing beyond vqaudio's own dependencies. Modules: ``service`` (what each endpoint does, its limits and
errors, without HTTP), ``app`` (the FastAPI app and the server), ``container`` (the .vqa adapter), ``client``;
the page is ``static/``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vqaudio.serve.client import Client, ServiceError, Tokens

__all__ = ["Client", "ServiceError", "Tokens"]


def __getattr__(name: str) -> Any:
    """The client on first use: ``from vqaudio.serve import Client`` imports neither torch nor fastapi."""
    if name in __all__:
        from vqaudio.serve import client

        return getattr(client, name)
    raise AttributeError(f"module 'vqaudio.serve' has no attribute {name!r}")
