"""How deeply JSON may nest: one limit of our own, the same on every Python.

msgspec and the ``json`` module recurse once per array or object and stop at the
interpreter's recursion guard, which moved between versions: about 1,000 levels
on Python 3.10 and 3.11 (less whatever the caller's stack already holds), 1,500
on 3.12, 10,000 on 3.13; 3.14 measures the stack itself. So the same event was
malformed on one version and decoded on the next. JSON nested deeper than
:data:`MAX_JSON_DEPTH` is refused before it is decoded, everywhere: a TGI event
nests 4 levels, a request with a tool's JSON schema a few dozen at most.
"""

from __future__ import annotations

__all__ = ["MAX_JSON_DEPTH", "NESTING_CHECK_SIZE", "too_deep"]

# serde_json's default, far below every interpreter's own limit.
MAX_JSON_DEPTH = 128

# Valid JSON nested deeper than the limit has an opening and a closing bracket per
# level, so anything this short or shorter cannot be: the check costs nothing there.
# (Unclosed brackets are invalid JSON, refused by the decoder on every version.)
NESTING_CHECK_SIZE = 2 * MAX_JSON_DEPTH

_OPEN = frozenset(b"[{")
# Every byte but the four brackets, for bytes.translate(None, delete=...).
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def too_deep(data: bytes | str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``data``, read as JSON, nests arrays and objects more than ``limit`` levels.

    Brackets inside strings do not count. Everything runs at C speed except a
    final walk over the brackets, which only JSON with more than ``limit``
    brackets outside strings needs.
    """
    if len(data) <= 2 * limit:
        return False
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") <= limit:  # the usual answer for a long event: its text
        return False
    # Drop escaped backslashes, then escaped quotes: every quote left opens or
    # closes a string, so the even pieces between quotes are outside strings.
    unquoted = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(unquoted.split(b'"')[::2]).translate(None, _NOT_BRACKETS)
    if len(brackets) <= limit:
        return False
    depth = 0
    for byte in brackets:
        if byte in _OPEN:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False
