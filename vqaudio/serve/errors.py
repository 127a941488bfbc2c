"""The service's refusals, shared by the server (which raises them) and the client (which gets them back)."""

from __future__ import annotations

from vqaudio.errors import VQAudioError


class ServiceError(VQAudioError):
    """A request the service refuses: ``status`` is the HTTP status, ``message`` says what was received, what
    was expected and what to do. The JSON body of the response is ``{"error": {"code": status, "message":
    message}}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message
