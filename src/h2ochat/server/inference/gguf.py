"""What a GGUF file says about its model, read from the header without loading the model.

A GGUF file starts with ``GGUF``, a version, the tensor and key counts, then
typed key/value pairs (general.name, tokenizer.chat_template, the vocabulary…)
before any tensor; see ggml's docs/gguf.md. Reading the pairs takes a fraction
of a second even for a 150k-token vocabulary, and no memory to speak of.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from h2ochat.server.config import ConfigError, LlamaEndpoint, ModelConfig

__all__ = ["GGUF_MAGIC", "GgufInfo", "NotGguf", "gguf_models", "read_gguf_info", "template_family"]

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
        # Mapped, not read: the header is walked by offsets and only the wanted values are decoded.
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            found = _Header(data, str(path)).wanted_values()
    return GgufInfo(
        path=str(path),
        name=_text(found.get("general.name")),
        architecture=_text(found.get("general.architecture")),
        chat_template=_text(found.get("tokenizer.chat_template")),
    )


def gguf_models(gguf: str) -> list[ModelConfig]:
    """The one model of ``serve --gguf PATH``, named and described by what its file says."""
    path = Path(gguf)
    if not path.is_file():
        raise ConfigError(f"--gguf {gguf}: no such file")
    info = read_gguf_info(path)
    name = info.name or path.stem
    description = f"{path.name}: {info.architecture or 'unknown'} model, chat template {info.template_family}"
    return [
        ModelConfig(name=name, display_name=name, description=description, endpoints=[LlamaEndpoint(gguf=str(path))])
    ]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class _Header:
    """A cursor over the key/value section of a mapped GGUF file."""

    def __init__(self, data: mmap.mmap, path: str) -> None:
        self.data = data
        self.path = path
        self.offset = 4

    def wanted_values(self) -> dict[str, Any]:
        version, _tensors, count = self.unpack("<IQQ")
        if version < 2:
            raise NotGguf(f"{self.path} is GGUF version {version}; llama.cpp reads version 2 and later")
        found: dict[str, Any] = {}
        for _ in range(count):
            key = self.string(keep=True)
            (kind,) = self.unpack("<I")
            value = self.value(kind, keep=key in _WANTED)
            if key in _WANTED:
                found[key] = value
        return found

    def unpack(self, layout: str) -> tuple[Any, ...]:
        size = struct.calcsize(layout)
        if self.offset + size > len(self.data):
            raise NotGguf(f"{self.path}: the GGUF header is cut short")
        values = struct.unpack_from(layout, self.data, self.offset)
        self.offset += size
        return values

    def string(self, keep: bool) -> str | None:
        (length,) = self.unpack("<Q")
        start, self.offset = self.offset, self.offset + length
        if self.offset > len(self.data):
            raise NotGguf(f"{self.path}: the GGUF header is cut short")
        return self.data[start : self.offset].decode("utf-8", "replace") if keep else None

    def skip_strings(self, count: int) -> None:
        data, offset, length_at = self.data, self.offset, struct.Struct("<Q").unpack_from
        try:
            for _ in range(count):
                offset += 8 + length_at(data, offset)[0]
        except struct.error:
            raise NotGguf(f"{self.path}: the GGUF header is cut short") from None
        self.offset = offset

    def value(self, kind: int, keep: bool) -> Any:
        if kind == _STRING:
            return self.string(keep)
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])[0]
        if kind == _ARRAY:
            item_kind, length = self.unpack("<IQ")
            if item_kind in _SCALARS and not keep:
                self.offset += struct.calcsize(_SCALARS[item_kind]) * length  # skipped without decoding
                return None
            if item_kind == _STRING and not keep:
                self.skip_strings(length)  # the vocabulary: 50k to 250k strings, the bulk of the header
                return None
            items = [self.value(item_kind, keep) for _ in range(length)]
            return items if keep else None
        raise NotGguf(f"{self.path}: unknown GGUF value type {kind}")
