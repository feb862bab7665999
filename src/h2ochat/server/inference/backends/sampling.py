"""How a request's parameters become llama.cpp sampling: ``Llama.generate``'s arguments, then a
sampler chain built as llama-cpp-python builds it, one per answer (:mod:`.batch`)."""

from __future__ import annotations

import random
from typing import Any

from h2ochat.protocol.parameters import Parameters

__all__ = ["sampler_chain", "sampling_arguments"]

# llama-cpp-python's Llama penalizes repeats among the last 64 tokens; the same here,
# so that an answer is the one the non-batched backend gave.
_PENALTY_LAST_N = 64


def sampling_arguments(parameters: Parameters) -> dict[str, Any]:
    """TGI parameters as ``Llama.generate`` arguments (greedy unless do_sample)."""
    if not parameters.do_sample:
        return {
            "temp": 0.0,
            "top_k": 1,
            "top_p": 1.0,
            "min_p": 0.0,
            "typical_p": 1.0,
            "repeat_penalty": parameters.repetition_penalty or 1.0,
        }
    return {
        "temp": parameters.temperature or 1.0,
        "top_k": parameters.top_k or 0,  # 0: no top-k cut, as TGI without top_k
        "top_p": parameters.top_p or 1.0,
        "min_p": 0.0,
        "typical_p": parameters.typical_p or 1.0,
        "repeat_penalty": parameters.repetition_penalty or 1.0,
    }


def sampler_chain(llama_cpp: Any, arguments: dict[str, Any], n_vocab: int, seed: int | None) -> Any:
    """A llama.cpp sampler chain built as llama-cpp-python's ``Llama.generate`` builds it.

    ``arguments`` is :func:`sampling_arguments`'s output: temperature 0 means greedy. The
    seed is cut to 32 bits, as ``Llama`` passes it to llama.cpp, so a seeded answer matches
    the non-batched one.
    """
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    add = llama_cpp.llama_sampler_chain_add
    add(chain, llama_cpp.llama_sampler_init_penalties(n_vocab, _PENALTY_LAST_N, arguments["repeat_penalty"], 0.0, 0.0))
    if arguments["temp"] == 0.0:
        add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    add(chain, llama_cpp.llama_sampler_init_top_k(arguments["top_k"]))
    add(chain, llama_cpp.llama_sampler_init_typical(arguments["typical_p"], 1))
    add(chain, llama_cpp.llama_sampler_init_top_p(arguments["top_p"], 1))
    add(chain, llama_cpp.llama_sampler_init_min_p(arguments["min_p"], 1))
    add(chain, llama_cpp.llama_sampler_init_temp(arguments["temp"]))
    draw = seed if seed is not None else random.getrandbits(32)
    add(chain, llama_cpp.llama_sampler_init_dist(draw & 0xFFFFFFFF))
    return chain
