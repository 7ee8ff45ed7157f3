"""Hugging Face Hub access that fails fast and says what to do when the Hub cannot be reached.

huggingface_hub retries a dead connection for ~20 s per file before giving up with a generic message.
A notebook user deserves better: we look in the local cache first, probe the endpoint once with a short
timeout, and otherwise name the missing file and how to provide it locally.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from urllib.parse import urlparse


class HubUnavailableError(FileNotFoundError):
    """A file is needed from the Hub, it is not in the local cache, and the Hub cannot be reached."""


def _offline_flag() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


_PROBE_TTL_S = 30.0
_probe: dict[str, tuple[float, bool]] = {}  # endpoint -> (when probed, reachable)


def _endpoint_reachable(timeout: float = 3.0) -> bool:
    """One TCP connect to the endpoint, remembered for 30 s so a notebook does not re-probe per layer."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    when, ok = _probe.get(endpoint, (float("-inf"), False))
    if time.monotonic() - when < _PROBE_TTL_S:
        return ok
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            ok = True
    except OSError:
        ok = False
    _probe[endpoint] = (time.monotonic(), ok)
    return ok


def forget_probe() -> None:
    _probe.clear()


def hub_available() -> bool:
    """True if downloads can be attempted: not in offline mode and the endpoint answers a TCP connect."""
    return not _offline_flag() and _endpoint_reachable()


def _unavailable(repo_id: str, filename: str | None, local_hint: str) -> HubUnavailableError:
    what = f"'{filename}' from '{repo_id}'" if filename else f"'{repo_id}'"
    why = "HF_HUB_OFFLINE is set" if _offline_flag() else "the Hugging Face Hub cannot be reached"
    include = f" --include {filename}" if filename else ""
    return HubUnavailableError(
        f"{what} is not in the local Hugging Face cache and {why}.\n"
        f"Fetch it on a machine with network access: `hf download {repo_id}{include} --local-dir <folder>`, "
        f"copy the folder here and {local_hint}"
    )


def fetch_file(repo_id: str, filename: str, revision: str | None = None) -> Path:
    """Local path of one file of a hub repo: from the cache if there, else downloaded (that file only)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, EntryNotFoundError, OSError):
        pass
    if not hub_available():
        raise _unavailable(repo_id, filename, "pass the local folder instead of the hub id.")
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision))
    except RepositoryNotFoundError as err:
        raise FileNotFoundError(f"Hub repository '{repo_id}' does not exist or is private.") from err
    except EntryNotFoundError as err:
        raise FileNotFoundError(f"Hub repository '{repo_id}' has no file '{filename}'.") from err


def fetch_snapshot(repo_id: str, allow_patterns: list[str] | None = None, revision: str | None = None) -> Path:
    """Local folder of a hub repo (model checkpoints): cached snapshot if complete, else downloaded."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=allow_patterns, revision=revision,
                                      local_files_only=True))
    except (LocalEntryNotFoundError, OSError):
        pass
    if not hub_available():
        raise _unavailable(repo_id, None, "pass that folder to Lab.load.")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=allow_patterns, revision=revision))
    except RepositoryNotFoundError as err:
        raise FileNotFoundError(f"Hub repository '{repo_id}' does not exist or is private.") from err
