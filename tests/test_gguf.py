"""The GGUF header reader against llama.cpp's own reading of the same file."""

from __future__ import annotations

from pathlib import Path

import pytest

from h2ochat.server.inference.backends.llama import embedded_gguf, load_llama
from h2ochat.server.inference.gguf import NotGguf, read_gguf_info, template_family


@pytest.mark.model
def test_the_header_says_what_llama_cpp_reads() -> None:
    info = read_gguf_info(embedded_gguf())
    llama = load_llama(embedded_gguf(), n_ctx=256, n_threads=1)
    try:
        metadata = llama.metadata
    finally:
        llama.close()
    assert info.name == metadata["general.name"]
    assert info.architecture == metadata["general.architecture"] == "llama"
    assert info.chat_template == metadata["tokenizer.chat_template"]
    assert info.template_family == "ChatML"


@pytest.mark.model  # cuts the embedded model's GGUF file
def test_not_a_gguf_and_a_cut_header(tmp_path: Path) -> None:
    page = tmp_path / "page.gguf"
    page.write_bytes(b"<html>Moved</html>")
    with pytest.raises(NotGguf, match="does not start with 'GGUF'"):
        read_gguf_info(page)
    cut = tmp_path / "cut.gguf"
    with open(embedded_gguf(), "rb") as whole:
        cut.write_bytes(whole.read(200_000))  # the header (the vocabulary above all) runs past this
    with pytest.raises(NotGguf, match="cut short"):
        read_gguf_info(cut)


def test_template_families() -> None:
    assert template_family(None) == "none"
    assert template_family("{{ '<|start_header_id|>' }}") == "Llama 3"
    assert template_family("{{ '[INST] ' + m }}") == "Mistral/Llama 2"
    assert template_family("{{ m }}") == "custom"
