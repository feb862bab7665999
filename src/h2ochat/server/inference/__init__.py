"""Everything that turns a prompt into tokens: the runtime of each model and its backends.

- ``runtime``: the configured models at run time, their queues, prompts and answers in progress;
- ``backends/``: the embedded llama.cpp model (with its batching scheduler), upstream TGI and
  OpenAI servers, and a fixed-text backend for tests;
- ``hub``: GGUF models pulled from the Hugging Face Hub; ``gguf``: what a GGUF file says.

Nothing here knows HTTP requests or storage; the protocol handlers call in.
"""
