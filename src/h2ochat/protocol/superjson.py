"""The superjson envelope of current chat-ui's ``/api/v2`` reads, both ways.

chat-ui serialises those answers (and the ``conversation`` string of its
create answer) with the superjson library: the body is ``{"json": value,
"meta": {"values": …, "v": 1}}``, where ``value`` is plain JSON and ``meta``
says which of its parts stood for JavaScript types JSON lacks: a ``Date`` is an
ISO string in ``json`` listed as ``["Date"]`` under its path
(``"messages.0.createdAt"``), an ``undefined`` is a ``null`` listed as
``["undefined"]``.  ``meta`` is left out when nothing needs it.

:func:`decode` gives the value with those parts turned back into Python
(``datetime``, ``None``, ``int`` for ``bigint``, ``float`` for ``NaN`` and the
infinities, ``set`` and ``dict`` for ``Set`` and ``Map``); a type it does not
know, such as a custom ObjectId, stays as the JSON holds it.  :func:`encode`
writes ``datetime`` values the way chat-ui does.  Pure code, no I/O.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import msgspec

from h2ochat.protocol.errors import ProtocolError
from h2ochat.protocol.nesting import MAX_JSON_DEPTH, too_deep

__all__ = ["decode", "encode", "iso_date"]

_decoder = msgspec.json.Decoder()


def decode(body: bytes | str | Mapping[str, Any]) -> Any:
    """The value of a superjson envelope (raw JSON or already parsed), with ``meta``'s types applied.

    Raises :class:`ProtocolError` when ``body`` is not an envelope. A ``meta``
    that names a path the value lacks is ignored: the plain JSON stays usable.
    A parsed ``body`` is copied first, not changed.
    """
    envelope = _parse(body) if isinstance(body, (bytes, str)) else copy.deepcopy(body)
    if not isinstance(envelope, Mapping) or "json" not in envelope:
        raise ProtocolError(
            f"expected a superjson envelope {{'json': …, 'meta': …}}, got {_excerpt(envelope)}; "
            "is this a chat-ui server of today? (its /api/v2 routes answer that way)"
        )
    root = [envelope["json"]]  # a holder, so that an annotation on the root can replace it
    meta = envelope.get("meta")
    values = meta.get("values") if isinstance(meta, Mapping) else None
    if isinstance(values, list):
        _apply_tree(root, [0], values)
    elif isinstance(values, Mapping):
        for path, tree in values.items():
            if isinstance(path, str) and isinstance(tree, list):
                _apply_tree(root, [0, *_split_path(path)], tree)
    return root[0]


def encode(value: Any) -> dict[str, Any]:
    """``value`` as a superjson envelope: each ``datetime`` an ISO string listed as a ``Date``."""
    if isinstance(value, datetime):  # superjson writes the root's annotation alone, not under a path
        return {"json": iso_date(value), "meta": {"values": ["Date"], "v": 1}}
    dates: dict[str, list[str]] = {}
    plain = _plain(value, [], dates)
    if not dates:
        return {"json": plain}
    return {"json": plain, "meta": {"values": dates, "v": 1}}


def iso_date(moment: datetime) -> str:
    """A moment as JavaScript's ``toISOString`` writes it: UTC, milliseconds, ``Z`` (naive means UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    # By hand: strftime's %Y writes the year 999 as "999" on glibc, where JavaScript writes "0999".
    day = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
    return f"{day}T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.{moment.microsecond // 1000:03d}Z"


def _parse(body: bytes | str) -> Any:
    if too_deep(body):
        raise ProtocolError(f"the server sent JSON nested more than {MAX_JSON_DEPTH} levels deep: {_excerpt(body)}")
    try:
        return _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise ProtocolError(
            f"expected a superjson envelope, got something that is not JSON ({exc}): {_excerpt(body)}"
        ) from None


def _excerpt(value: Any) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return repr(text[:120])


def _split_path(path: str) -> list[str]:
    """superjson's path syntax: keys joined by ``.``; a ``.`` or ``\\`` inside a key is escaped with ``\\``."""
    keys: list[str] = []
    key: list[str] = []
    escaped = False
    for char in path:
        if escaped or char not in ".\\":
            key.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            keys.append("".join(key))
            key = []
    keys.append("".join(key))
    return keys


def _apply_tree(holder: list[Any], path: list[Any], tree: list[Any]) -> None:
    """A leaf ``[type]`` or a node ``[type, {subpath: tree}]``: the children first, as superjson does."""
    if not tree:
        return
    if len(tree) > 1 and isinstance(tree[1], Mapping):
        for subpath, subtree in tree[1].items():
            if isinstance(subpath, str) and isinstance(subtree, list):
                _apply_tree(holder, [*path, *_split_path(subpath)], subtree)
    parent, key = _locate(holder, path)
    if parent is not None:
        parent[key] = _untransform(tree[0], parent[key])


def _locate(holder: list[Any], path: list[Any]) -> tuple[Any, Any]:
    """The container and key of ``path`` (the holder's 0, then the keys), or ``(None, None)`` if it is not there."""
    parent: Any = holder
    key: Any = path[0]
    for step in path[1:]:
        parent = parent[key]
        if isinstance(parent, list):
            if not (isinstance(step, str) and step.isdigit() and int(step) < len(parent)):
                return None, None
            key = int(step)
        elif isinstance(parent, dict) and step in parent:
            key = step
        else:
            return None, None
    return parent, key


def _untransform(kind: Any, value: Any) -> Any:
    if kind == "Date" and isinstance(value, str):
        try:
            return msgspec.convert(value, datetime)
        except msgspec.ValidationError:
            return value  # "Invalid Date" and the like: the text is all there is
    if kind == "undefined":
        return None
    if kind == "bigint" and isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    if kind == "number" and value in ("NaN", "Infinity", "-Infinity"):
        return float(value)  # Python reads all three as JavaScript writes them
    if kind == "set" and isinstance(value, list):
        return _hashable(value, set)
    if kind == "map" and isinstance(value, list) and all(isinstance(pair, list) and len(pair) == 2 for pair in value):
        return _hashable(value, dict)
    return value  # regexp, Error, URL, custom (ObjectId…): as the JSON holds them


def _hashable(value: list[Any], kind: type[Any]) -> Any:
    try:
        return kind(value)
    except TypeError:  # unhashable members (objects, arrays): a list keeps them
        return value


def _plain(value: Any, path: list[str], dates: dict[str, list[str]]) -> Any:
    if isinstance(value, datetime):
        dates[".".join(path)] = ["Date"]
        return iso_date(value)
    if isinstance(value, Mapping):
        return {key: _plain(item, [*path, _escape(str(key))], dates) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item, [*path, str(index)], dates) for index, item in enumerate(value)]
    return value


def _escape(key: str) -> str:
    return key.replace("\\", "\\\\").replace(".", "\\.")
