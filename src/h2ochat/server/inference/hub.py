"""GGUF models by name from the Hugging Face Hub: ``REPO[:QUANT or FILE]``, pulled into its cache.

``bartowski/Qwen2.5-1.5B-Instruct-GGUF:Q4_K_M`` names the repository's file whose name carries
the quantization ``Q4_K_M``; ``REPO:some-file.gguf`` names a file; a bare ``REPO`` takes ``Q4_K_M``
when the repository has it (llama.cpp's ``-hf`` default), its only GGUF file when it has one, and
otherwise lists the choices. ``hf:`` in front is allowed (``gguf = "hf:REPO:QUANT"`` in a config).

Files go to huggingface_hub's cache (``HF_HOME``, ``HF_HUB_CACHE``), which resumes a download cut
in the middle; ``HF_TOKEN`` opens gated repositories, ``HF_ENDPOINT`` points at a mirror and
``HF_HUB_OFFLINE=1`` keeps everything local. :func:`local_gguf` looks in the cache first, so a
model pulled once starts with no network at all.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from h2ochat.server.config import ConfigError
from h2ochat.server.inference.gguf import GGUF_MAGIC

__all__ = [
    "DEFAULT_QUANT",
    "HubError",
    "LocalModel",
    "ModelSpec",
    "cached_models",
    "choose_file",
    "human_size",
    "is_hub_spec",
    "local_gguf",
    "parse_spec",
    "pull",
    "remove",
]

DEFAULT_QUANT = "Q4_K_M"
log = logging.getLogger("h2ochat.hub")
_SPLIT = re.compile(r"-\d{5}-of-\d{5}\.gguf$", re.IGNORECASE)
_REPO = re.compile(r"^[\w.-]+/[\w.-]+$")
# Room kept free besides the file itself, so a download never fills the disk to the last byte.
_DISK_MARGIN = 64 * 1024 * 1024


class HubError(ConfigError):
    """A model could not be found or pulled; the message says why and what to do."""


@dataclass(frozen=True)
class ModelSpec:
    repo: str
    choice: str | None  # a quantization (Q4_K_M) or a file name; None: the default

    def __str__(self) -> str:
        return f"{self.repo}:{self.choice}" if self.choice else self.repo


@dataclass(frozen=True)
class LocalModel:
    repo: str
    file: str  # the path inside the repository
    path: Path  # where llama.cpp reads it
    size: int


def is_hub_spec(gguf: str) -> bool:
    """True for ``hf:REPO[:QUANT]``, the form a config's ``gguf`` uses for a Hub model."""
    return gguf.startswith("hf:")


def parse_spec(text: str) -> ModelSpec:
    """``[hf:]OWNER/NAME[:QUANT or FILE]`` as a :class:`ModelSpec`; a :class:`HubError` says what is wrong."""
    repo, _, choice = text.removeprefix("hf:").partition(":")
    if not _REPO.match(repo):
        example = "bartowski/Qwen2.5-1.5B-Instruct-GGUF:Q4_K_M"
        raise HubError(f"{text!r} is not a Hub model: write OWNER/NAME[:QUANT or FILE], e.g. {example}")
    return ModelSpec(repo, choice or None)


def choose_file(spec: ModelSpec, files: list[str]) -> str:
    """The GGUF file of ``files`` that ``spec`` names, by the rules of this module's docstring."""
    ggufs = [name for name in files if name.lower().endswith(".gguf")]
    if not ggufs:
        shown = ", ".join(sorted(files)[:8]) or "nothing"
        raise HubError(f"{spec.repo} has no GGUF files (it holds {shown}); look for a -GGUF repository of the model")
    if spec.choice and spec.choice.lower().endswith(".gguf"):
        if spec.choice in files:
            return spec.choice
        raise HubError(f"{spec.repo} has no file {spec.choice}; its GGUF files: {', '.join(sorted(ggufs))}")
    if spec.choice and "." in spec.choice.rsplit("/", 1)[-1]:
        raise HubError(f"{spec.choice} is not a GGUF file; {spec.repo} has: {', '.join(sorted(ggufs))}")
    models = [name for name in ggufs if "mmproj" not in name.lower()]  # vision projectors are no chat models
    quant = spec.choice or DEFAULT_QUANT
    pattern = re.compile(rf"(?<![A-Za-z0-9]){re.escape(quant)}(?![A-Za-z0-9_])", re.IGNORECASE)
    matching = sorted((name for name in models if pattern.search(name.rsplit("/", 1)[-1])), key=len)
    if not matching and spec.choice is None and len(models) == 1:
        matching = models
    if not matching:
        wanted = f"no {quant} file" if spec.choice else f"several GGUF files and none is {DEFAULT_QUANT}"
        raise HubError(
            f"{spec.repo} has {wanted}; choose one with {spec.repo}:QUANT or {spec.repo}:FILE. "
            f"Its GGUF files: {', '.join(sorted(models))}"
        )
    if _SPLIT.search(matching[0]):
        raise HubError(f"{matching[0]} is split in several files, which h2ochat cannot pull yet; choose another")
    return matching[0]


def local_gguf(gguf: str, progress: bool = True) -> str:
    """A config's ``gguf``: a path as it is, ``hf:REPO[:QUANT]`` from the cache (no network) or pulled now."""
    if not is_hub_spec(gguf):
        return gguf
    spec = parse_spec(gguf)
    cached = _cached_file(spec)
    return str(cached.path if cached is not None else pull(spec, progress).path)


def pull(spec: ModelSpec, progress: bool = True) -> LocalModel:
    """Download ``spec``'s file into the cache (resuming a partial download) and return it."""
    from huggingface_hub import constants, hf_hub_download

    if constants.HF_HUB_OFFLINE:
        cached = _cached_file(spec)
        if cached is None:
            raise HubError(f"{spec} is not in the cache and HF_HUB_OFFLINE is set; unset it to download the model")
        return cached
    with _hub_errors(spec):
        files = _remote_files(spec.repo)
        chosen = choose_file(spec, list(files))
        _check_disk(spec.repo, chosen, files[chosen])
        # The bar shows in a terminal only (tqdm's rule); the log line says it everywhere else.
        log.info("pulling %s %s (%s) into %s", spec.repo, chosen, human_size(files[chosen]), constants.HF_HUB_CACHE)
        _progress_bars(progress)
        path = Path(hf_hub_download(spec.repo, chosen))
    _check_gguf(path, spec)
    return LocalModel(spec.repo, chosen, path, path.stat().st_size)


def cached_models() -> list[LocalModel]:
    """Every GGUF file in huggingface_hub's cache, largest first."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir()
    except CacheNotFound:
        return []
    found = [
        LocalModel(repo.repo_id, file.file_name, file.file_path, file.size_on_disk)
        for repo in cache.repos
        if repo.repo_type == "model"
        for revision in repo.revisions
        for file in revision.files
        if file.file_name.lower().endswith(".gguf")
    ]
    return sorted(found, key=lambda model: -model.size)


def remove(repo: str) -> int:
    """Delete a repository from the cache, every revision; the bytes freed (0: it was not there)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir()
    except CacheNotFound:
        return 0
    revisions = [
        r.commit_hash for c in cache.repos if c.repo_id == repo and c.repo_type == "model" for r in c.revisions
    ]
    if not revisions:
        return 0
    strategy = cache.delete_revisions(*revisions)
    strategy.execute()
    return int(strategy.expected_freed_size)


# Helpers ------------------------------------------------------------------------------------------


def _cached_file(spec: ModelSpec) -> LocalModel | None:
    """The file ``spec`` names among the cached snapshots of its repository, newest snapshot first."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    snapshots = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=spec.repo, repo_type="model") / "snapshots"
    if not snapshots.is_dir():
        return None
    for snapshot in sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):
        files = [str(p.relative_to(snapshot)) for p in snapshot.rglob("*.gguf") if p.is_file()]
        try:
            chosen = choose_file(spec, files)
        except HubError:
            continue
        path = snapshot / chosen
        _check_gguf(path, spec)
        return LocalModel(spec.repo, chosen, path, path.stat().st_size)
    return None


def _remote_files(repo: str) -> dict[str, int]:
    """The repository's files and their sizes (``GET /api/models/REPO/tree/main``)."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    entries = HfApi().list_repo_tree(repo, recursive=True)
    return {entry.path: entry.size for entry in entries if isinstance(entry, RepoFile)}


def _check_disk(repo: str, file: str, size: int) -> None:
    """Refuse before downloading when the cache's disk cannot hold the rest of the file."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    cache = Path(constants.HF_HUB_CACHE)
    existing = next(p for p in [cache, *cache.parents] if p.exists())
    free = shutil.disk_usage(existing).free
    # A partial download already on disk counts as done: it is resumed, not restarted.
    blobs = cache / repo_folder_name(repo_id=repo, repo_type="model") / "blobs"
    partial = sum(p.stat().st_size for p in blobs.glob("*.incomplete"))
    needed = max(size - partial, 0)
    if free < needed + _DISK_MARGIN:
        raise HubError(
            f"not enough disk space for {file}: it needs {human_size(needed)} and {existing} has "
            f"{human_size(free)} free; free some space, or point HF_HOME (or HF_HUB_CACHE) at a larger disk"
        )


def _check_gguf(path: Path, spec: ModelSpec) -> None:
    with path.open("rb") as file:
        magic = file.read(4)
    if magic != GGUF_MAGIC:
        raise HubError(
            f"{spec}: {path} is not a GGUF file (it starts with {magic!r}); choose another file "
            f"(h2ochat models rm {spec.repo} deletes this one)"
        )


def _progress_bars(enabled: bool) -> None:
    from huggingface_hub.utils.tqdm import disable_progress_bars, enable_progress_bars

    (enable_progress_bars if enabled else disable_progress_bars)()


def human_size(count: float) -> str:
    """Bytes for people: 98.4 MB."""
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


@contextlib.contextmanager
def _hub_errors(spec: ModelSpec) -> Iterator[None]:
    """huggingface_hub's and requests' exceptions as one :class:`HubError` that says what to do."""
    try:
        yield
    except HubError:
        raise
    except Exception as exc:
        raise HubError(_explain(spec, exc)) from exc


def _explain(spec: ModelSpec, exc: Exception) -> str:
    import requests
    from huggingface_hub import constants
    from huggingface_hub import errors as hub

    if isinstance(exc, hub.GatedRepoError):
        return f"{spec.repo} is gated: accept its terms on the Hub, then set HF_TOKEN to a token of your account"
    if isinstance(exc, hub.RepositoryNotFoundError):
        return f"no repository {spec.repo} on {constants.ENDPOINT} (or it is private: set HF_TOKEN)"
    if isinstance(exc, hub.EntryNotFoundError):
        return f"{spec} is not (or no longer) in the repository; run h2ochat models pull {spec.repo} to list its files"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return f"the download of {spec} was cut in the middle; run the same command again to resume it"
    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return (
            f"cannot reach the Hub at {constants.ENDPOINT} ({type(exc).__name__}); check the network, "
            "or set HF_HUB_OFFLINE=1 to use only models already pulled"
        )
    return f"pulling {spec} failed: {exc}"
