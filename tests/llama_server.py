"""Runs llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``) for the tests.

Why a launcher: llama.cpp's extra CPU buffer types (AMX / repacked weights)
crash with SIGSEGV in llama_decode on the machines these tests run on.
h2ochat's own loader turns them off (``extra_buffers_disabled`` in
``h2ochat.server.inference.backends.llama``), but llama_cpp.server has no option for
it. So this module loads the server inside that same context: the model that
``llama_cpp.server`` loads at start-up reads the wrapped default parameters.

Usage: ``python -m tests.llama_server --model PATH --port N [other llama_cpp.server options]``.
"""

from __future__ import annotations

from llama_cpp.server.__main__ import main

from h2ochat.server.inference.backends.llama import extra_buffers_disabled

__all__ = ["main"]

if __name__ == "__main__":
    # The whole server runs inside the block: uvicorn loads the model when it builds the app.
    with extra_buffers_disabled():
        main()
