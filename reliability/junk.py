"""Random and malformed requests for the server, drawn from a ``random.Random``.

Every endpoint is fed random methods, paths, headers, cookies and bodies
(wrong JSON types, huge strings, invalid UTF-8, nested junk, wrong content
types). A ``random.Random`` drives it all, so that hypothesis
(``st.randoms()``) and the long run (a seed) share one generator.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from typing import Any

from reliability.badinput import MODEL, Context, RawRequest, message_body

__all__ = ["malformed_request", "random_request"]

_ENDPOINTS = [
    ("POST", "/settings", "settings"),
    ("POST", "/conversation", "create"),
    ("POST", "/conversation/{id}", "message"),
    ("DELETE", "/conversation/{id}", ""),
    ("PATCH", "/conversation/{id}", "title"),
    ("POST", "/conversation/{id}/stop-generating", ""),
    ("POST", "/conversation/{id}/summarize", ""),
    ("GET", "/api/models", ""),
    ("GET", "/api/conversations", ""),
    ("GET", "/api/conversation/{id}", ""),
    ("GET", "/v1/models", ""),
    ("GET", "/v1/models/{model}", ""),
    ("POST", "/v1/chat/completions", "openai"),
    ("POST", "/generate", "tgi"),
    ("POST", "/generate_stream", "tgi"),
    ("POST", "/", "tgi"),
]
_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "PROPFIND", "post", "FOO"]
_CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/json; charset=latin-1",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "multipart/form-data",
    "text/plain",
    "text/html",
    "application/octet-stream",
    "application/x-www-form-urlencoded; charset=bogus",
    "garbage",
    "",
]
_JUNK_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    1.5,
    10**30,
    "",
    " ",
    "x" * 5000,
    "\u0000",
    "\ud7ff\ue000\U0010ffff",
    "😀" * 100,
    [],
    [1, "a", None],
    {},
    {"a": {"b": [1, {"c": "d"}]}},
    "00000000-0000-0000-0000-000000000000",
]


def random_request(rng: random.Random, context: Context) -> RawRequest:
    """A request to one of the endpoints, with its parts made wrong at random."""
    method, template, kind = rng.choice(_ENDPOINTS)
    if rng.random() < 0.15:
        method = rng.choice(_METHODS)
    return RawRequest(method, _path(rng, template, context), _headers(rng, context, kind), _body(rng, kind))


def _path(rng: random.Random, template: str, context: Context) -> str:
    conversation = rng.choice(
        [
            *context.conversations.values(),
            "".join(rng.choice("0123456789abcdef") for _ in range(24)),
            "".join(rng.choice("abcXYZ09-_.~%") for _ in range(rng.randint(1, 40))),
            "%ff%fe%00",
            "..%2f..%2fetc%2fpasswd",
            "x" * rng.randint(100, 3000),
            "%F0%9F%98%80",
        ]
    )
    path = template.replace("{id}", conversation).replace("{model}", rng.choice([MODEL, "nope", "a/b/c", "%00"]))
    roll = rng.random()
    if roll < 0.05:
        path += "/"
    elif roll < 0.1:
        path = "/" + path
    elif roll < 0.15:
        path += "?" + rng.choice(["a=1", "a", "=&=&", "%zz", "x=" + "y" * 2000])
    elif roll < 0.2:
        path += "/" + rng.choice(["extra", "..", "%2e%2e", "😀"])
    return path


def _headers(rng: random.Random, context: Context, kind: str) -> list[tuple[str, str]]:
    content_type = "application/json" if kind not in ("settings",) else "application/x-www-form-urlencoded"
    if rng.random() < 0.3:
        content_type = rng.choice(_CONTENT_TYPES)
    headers = [("Content-Type", content_type)] if content_type else []
    cookie = rng.choice(
        [
            *context.cookies.values(),
            *context.cookies.values(),
            "",
            "hf-chat=not-a-uuid",
            f"hf-chat={uuid.uuid4()}",
            "hf-chat=" + "x" * 4000,
            "hf-chat=1; hf-chat=2",
            "=;;;=",
            'hf-chat="\\x00"',
        ]
    )
    if cookie:
        headers.append(("Cookie", cookie))
    referer = rng.choice([context.url + "/", context.url + "/", "", "http://evil.example/", "not a url", "http://[::1"])
    if referer:
        headers.append(("Referer", referer))
    if rng.random() < 0.3:
        headers.append(("Accept", rng.choice(["text/html", "application/json", "*/*", "text/html;q=0.1, junk"])))
    if rng.random() < 0.1:
        headers.append(("Authorization", rng.choice(["Bearer x", "Basic", "\u00e9t\u00e9"])))
    if rng.random() < 0.1:
        headers.append(("X-Junk", "".join(chr(rng.randint(32, 255)) for _ in range(rng.randint(0, 50)))))
    return headers


def _body(rng: random.Random, kind: str) -> bytes:
    roll = rng.random()
    if roll < 0.15:
        return _junk_body(rng)
    value = _valid(rng, kind)
    if value is None:
        return b"" if rng.random() < 0.7 else _junk_body(rng)
    if roll < 0.75:
        value = _mutate(rng, value)
    if kind == "settings" and isinstance(value, dict) and rng.random() < 0.7:
        pairs = [(str(k), v if isinstance(v, str) else json.dumps(v)) for k, v in value.items()]
        return "&".join(f"{k}={v}" for k, v in pairs).encode("utf-8", "surrogatepass")
    return json.dumps(value).encode("utf-8", "surrogatepass")


def _valid(rng: random.Random, kind: str) -> Any:
    if kind == "settings":
        return {"ethicsModalAccepted": "true", "activeModel": MODEL, "shareConversationsWithModelAuthors": "true"}
    if kind == "create":
        return {"model": MODEL}
    if kind == "message":
        return message_body("hi")
    if kind == "title":
        return {"title": "A title"}
    if kind == "openai":
        return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    if kind == "tgi":
        return {"inputs": "hi", "parameters": {"max_new_tokens": 4}, "stream": rng.random() < 0.5}
    return None


def _mutate(rng: random.Random, value: Any) -> Any:
    """Replace one part of ``value`` (a key's value, a new key, or the whole) with junk."""
    if not isinstance(value, dict) or rng.random() < 0.1:
        return rng.choice(_JUNK_VALUES)
    target = value
    while rng.random() < 0.5:
        children = [k for k, v in target.items() if isinstance(v, dict)]
        if not children:
            break
        target = target[rng.choice(children)]
    key = rng.choice([*target.keys(), "unexpected_key", ""]) if target else "unexpected_key"
    if key == "response_id" and rng.random() < 0.5:
        target[key] = target.get("id")
    else:
        target[key] = rng.choice(_JUNK_VALUES)
    return value


def _junk_body(rng: random.Random) -> bytes:
    choices: list[Callable[[], bytes]] = [
        lambda: rng.randbytes(rng.randint(0, 200)),
        lambda: b'{"inputs": "\xff\xfe\xfd"}',
        lambda: b"{" * rng.randint(1, 50),
        lambda: b'{"model": "' + b"x" * rng.randint(10_000, 200_000) + b'"}',
        lambda: b"x" * (2 * 1024 * 1024),  # over the body limit: 413
        lambda: b"null",
        lambda: b'"just a string"',
        lambda: b"--xyz\r\nContent-Disposition: form-data; name=a\r\n\r\nb\r\n--xyz--\r\n",
        lambda: b"a=%ZZ&&==&b=\xff",
        lambda: b'{"inputs": "x", "parameters": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ]
    return rng.choice(choices)()


def malformed_request(rng: random.Random, context: Context) -> RawRequest:
    """HTTP that is broken below the application: aiohttp's parser is expected to refuse most of it."""
    cookie = next(iter(context.cookies.values()))
    host = context.host
    choices = [
        b"GE T /api/models HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /api/models HTTP/9.9\r\nHost: h\r\n\r\n",
        b"GET /api/models\r\n\r\n",
        b"GET /api/models HTTP/1.1\r\nBroken header line\r\n\r\n",
        b"GET /api/models HTTP/1.1\r\nX-Null: a\x00b\r\n\r\n",
        b"POST /conversation HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"POST /conversation HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /conversation HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        b"GET /api/models HTTP/1.1\r\nX-Long: " + b"a" * 20_000 + b"\r\n\r\n",
        b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n",
        b"GET /api/models HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + rng.randbytes(40),  # a TLS ClientHello
        b"GET /api/\xff\xfe HTTP/1.1\r\n\r\n",
        rng.randbytes(rng.randint(1, 100)) + b"\r\n\r\n",
    ]
    raw = rng.choice(choices).replace(b"Host: h", f"Host: {host}\r\nCookie: {cookie}".encode())
    if b"Connection:" not in raw:
        raw = raw.replace(b"\r\n", b"\r\nConnection: close\r\n", 1)
    return RawRequest("RAW", "", [], raw=raw)
