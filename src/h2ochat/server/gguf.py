"""What a GGUF file says about its model, read from the header without loading the model.

A GGUF file starts with ``GGUF``, a version, the tensor and key counts, then
typed key/value pairs (general.name, tokenizer.chat_template, the vocabulary…)
before any tensor; see ggml's docs/gguf.md. Reading the pairs takes a fraction
of a second even for a 150k-token vocabulary, and no memory to speak of.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from h2ochat.server.config import ConfigError

__all__ = ["GGUF_MAGIC", "GgufInfo", "NotGguf", "read_gguf_info", "template_family"]

GGUF_MAGIC = b"GGUF"

# Value types of GGUF version 2 and 3: the struct format of the fixed-size ones.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# The keys worth keeping; everything else (the vocabulary above all) is skipped.
_WANTED = ("general.name", "general.architecture", "tokenizer.chat_template")


class NotGguf(ConfigError):
    """The file is not a GGUF model (or is cut short before the end of its header)."""


@dataclass(frozen=True)
class GgufInfo:
    path: str
    name: str | None  # general.name, e.g. "SmolLM2 135M Instruct"
    architecture: str | None  # general.architecture, e.g. "llama"
    chat_template: str | None  # tokenizer.chat_template (Jinja), None when the file has none

    @property
    def template_family(self) -> str:
        return template_family(self.chat_template)


def template_family(template: str | None) -> str:
    """A short name for a chat template, recognised by its markers (for people, not for rendering)."""
    if not template:
        return "none"
    markers = {
        "<|im_start|>": "ChatML",
        "<|start_header_id|>": "Llama 3",
        "<start_of_turn>": "Gemma",
        "[INST]": "Mistral/Llama 2",
        "<|user|>": "Phi/Zephyr",
    }
    return next((family for marker, family in markers.items() if marker in template), "custom")


def read_gguf_info(path: str | Path) -> GgufInfo:
    """The model's name, architecture and chat template from the header of a GGUF file."""
    with open(path, "rb") as file:
        if file.read(4) != GGUF_MAGIC:
            raise NotGguf(f"{path} is not a GGUF file (it does not start with 'GGUF')")
        version, _tensors, count = _unpack(file, "<IQQ")
        if version < 2:
            raise NotGguf(f"{path} is GGUF version {version}; llama.cpp reads version 2 and later")
        found: dict[str, Any] = {}
        for _ in range(count):
            key = _string(file)
            (kind,) = _unpack(file, "<I")
            value = _value(file, kind, keep=key in _WANTED)
            if key in _WANTED:
                found[key] = value
    return GgufInfo(
        path=str(path),
        name=_text(found.get("general.name")),
        architecture=_text(found.get("general.architecture")),
        chat_template=_text(found.get("tokenizer.chat_template")),
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _unpack(file: BinaryIO, layout: str) -> tuple[Any, ...]:
    size = struct.calcsize(layout)
    data = file.read(size)
    if len(data) != size:
        raise NotGguf(f"{file.name}: the GGUF header is cut short")
    return struct.unpack(layout, data)


def _string(file: BinaryIO) -> str:
    (length,) = _unpack(file, "<Q")
    data = file.read(length)
    if len(data) != length:
        raise NotGguf(f"{file.name}: the GGUF header is cut short")
    return data.decode("utf-8", "replace")


def _value(file: BinaryIO, kind: int, keep: bool) -> Any:
    if kind == _STRING:
        return _string(file)
    if kind in _SCALARS:
        return _unpack(file, _SCALARS[kind])[0]
    if kind == _ARRAY:
        item_kind, length = _unpack(file, "<IQ")
        if item_kind in _SCALARS and not keep:
            file.seek(struct.calcsize(_SCALARS[item_kind]) * length, 1)  # no need to decode what is skipped
            return None
        items = [_value(file, item_kind, keep) for _ in range(length)]
        return items if keep else None
    raise NotGguf(f"{file.name}: unknown GGUF value type {kind}")
