"""Generation parameters: TGI's names and ranges, checked before anything is generated."""

from __future__ import annotations

import random
from typing import Annotated, Any

import msgspec

__all__ = ["SETTINGS", "Parameters", "check_parameters", "check_settings", "merge_parameters", "request_parameters"]

_Positive = Annotated[float, msgspec.Meta(gt=0)]


class Parameters(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """TGI's generation parameters; ``None`` means "not set" (the backend's default)."""

    temperature: _Positive | None = None
    top_p: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    # Bounded by what llama.cpp can take: top_k is a C int, and only a seed's low 32 bits count there.
    top_k: Annotated[int, msgspec.Meta(gt=0, le=2**31 - 1)] | None = None
    typical_p: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    do_sample: bool | None = None  # None (not set) is greedy, like False
    repetition_penalty: _Positive | None = None
    max_new_tokens: Annotated[int, msgspec.Meta(gt=0)] | None = None
    stop: Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=200)]], msgspec.Meta(max_length=8)] = (
        msgspec.field(default_factory=list)
    )
    seed: Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)] | None = None
    truncate: Annotated[int, msgspec.Meta(gt=0)] | None = None
    details: bool = False
    return_full_text: bool = False
    # Accepted for TGI compatibility; only the values that change nothing are allowed.
    watermark: bool = False
    decoder_input_details: bool = False
    best_of: Annotated[int, msgspec.Meta(ge=1, le=1)] | None = None
    top_n_tokens: Annotated[int, msgspec.Meta(ge=0, le=0)] | None = None

    def __post_init__(self) -> None:
        if self.watermark:
            raise ValueError("watermarking is not supported by this server")


_KNOWN = ", ".join(Parameters.__struct_fields__)


def check_parameters(raw: Any, *, ceiling: int | None, where: str = "parameters") -> Parameters:
    """Validate a parameters object; a ``ValueError`` says which value and why."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be an object, got {type(raw).__name__}")
    try:
        parameters = msgspec.convert(raw, Parameters)
    except msgspec.ValidationError as exc:
        message = str(exc).replace("$", where, 1)
        if "unknown field" in message:
            message += f" (known parameters: {_KNOWN})"
        raise ValueError(message) from None
    if ceiling is not None and parameters.max_new_tokens is not None and parameters.max_new_tokens > ceiling:
        raise ValueError(
            f"{where}.max_new_tokens is {parameters.max_new_tokens}, over this server's limit of {ceiling}"
        )
    return parameters


# What a person may choose for a whole conversation; the page sends them with each of its messages.
SETTINGS = ("temperature", "max_new_tokens")


def check_settings(raw: Any, *, ceiling: int | None) -> dict[str, Any]:
    """A conversation's settings, checked as parameters are; ``None`` (null: the model's default) is left out."""
    if not isinstance(raw, dict):
        raise ValueError(
            'settings must be an object such as {"temperature": 0.7, "max_new_tokens": 256}, '
            f"got {type(raw).__name__}"
        )
    unknown = sorted(set(raw) - set(SETTINGS))
    if unknown:
        raise ValueError(f"settings holds {' and '.join(SETTINGS)} only, not {', '.join(map(repr, unknown))}")
    parameters = check_parameters(raw, ceiling=ceiling, where="settings")
    return {name: getattr(parameters, name) for name in SETTINGS if getattr(parameters, name) is not None}


def merge_parameters(defaults: Parameters, raw: Any, *, ceiling: int) -> Parameters:
    """The request's parameters over the model's defaults; the result is checked as a whole."""
    if raw is not None and not isinstance(raw, dict):
        raise ValueError(f"parameters must be an object, got {type(raw).__name__}")
    merged = {**msgspec.to_builtins(defaults), **{k: v for k, v in (raw or {}).items() if v is not None}}
    return check_parameters(merged, ceiling=ceiling)


def request_parameters(defaults: Parameters, raw: Any, *, ceiling: int) -> Parameters:
    """A request's parameters, merged and checked; sampling gets a seed, so that the answer can report it."""
    parameters = merge_parameters(defaults, raw, ceiling=ceiling)
    if parameters.do_sample and parameters.seed is None:
        parameters = msgspec.structs.replace(parameters, seed=random.getrandbits(32))
    return parameters
