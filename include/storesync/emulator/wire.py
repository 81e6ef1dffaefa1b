"""Transport-neutral request/response objects the vendor emulations work on."""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class Request:
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: object  # email.message.Message: case-insensitive .get()
    body: bytes
    host: str = "127.0.0.1"

    def header(self, name: str, default: str = "") -> str:
        value = self.headers.get(name) if self.headers is not None else None
        return default if value is None else value

    def query_value(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    # True when the request was accepted and recorded (the drop_after fault may then apply).
    accepted: bool = False


class Drop:
    """Close the connection without answering."""


DROP = Drop()


def json_response(status: int, obj, *, headers=None, accepted: bool = False) -> Response:
    return Response(
        status,
        json.dumps(obj, separators=(",", ":"), default=_json_default).encode(),
        "application/json",
        list(headers or []),
        accepted,
    )


def text_response(status: int, text: str, *, content_type: str = "text/plain; charset=utf-8") -> Response:
    return Response(status, text.encode(), content_type)


def _json_default(value):
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
