"""Where one layer's SAE file is: a file, a SAELens folder, a folder of layer files, or a hub repo.

Kept apart from the formats (which read a file they are given) and from the suite (which caches loaded layers),
so that ``SAE.load`` and ``SAESuite.open`` find files the same way without importing each other.
"""

from __future__ import annotations

from pathlib import Path

from . import hub
from .formats import is_saelens_folder, k_from_name, layer_of, saelens_layer
from .registry import layer_filename


def is_local(source) -> bool:
    """A Path, or a str naming something that exists on disk (anything else is taken for a hub repo id)."""
    return isinstance(source, Path) or (isinstance(source, str) and Path(source).expanduser().exists())


def looks_like_path(source) -> bool:
    """A str that is meant as a local path (``./x``, ``/x``, ``~/x``, ``C:\\x``, or ending in a file suffix)
    rather than a hub id ``owner/name``: a missing one is reported as a missing path, not a hub problem."""
    if not isinstance(source, str):
        return False
    return (source.startswith((".", "/", "~", "\\")) or (len(source) > 1 and source[1] == ":")
            or source.count("/") != 1 or Path(source).suffix in (".pt", ".pth", ".bin", ".safetensors"))


def scan_folder(folder: Path) -> dict[int, Path]:
    """Layer -> file (or SAELens subfolder) for every layer found in a folder."""
    found: dict[int, Path] = {}
    for child in sorted(folder.iterdir()):
        layer = layer_of(child)
        if layer is None and is_saelens_folder(child):
            layer = saelens_layer(child)
        if layer is not None:
            if layer in found and found[layer].suffix == ".pt":
                continue  # prefer the Qwen-Scope original when both are present
            found[layer] = child
    return found


def locate(source: str | Path, layer: int | None = None, k: int | None = None) -> tuple[Path, int | None]:
    """(path of the layer's file or SAELens folder, k implied by its folder's name or ``k``).

    Local files and folders are read as they are; anything else is a hub repo id whose ``layer{n}.sae.pt`` is
    fetched (that file only, from the cache when there)."""
    if is_local(source):
        path = Path(source).expanduser()
        if path.is_file() or is_saelens_folder(path):
            return path, k
        layers = scan_folder(path)
        if layer is None:
            if len(layers) != 1:
                raise ValueError(f"{path} holds layers {sorted(layers)}: pass layer=")
            layer = next(iter(layers))
        if layer not in layers:
            raise FileNotFoundError(f"{path} has no SAE for layer {layer} (layers found: {sorted(layers)})")
        return layers[layer], k or k_from_name(path)
    if looks_like_path(source):
        raise FileNotFoundError(f"no such file or folder: {source}")
    if layer is None:
        raise ValueError(f"'{source}' is a hub repo of one file per layer: pass layer=")
    return hub.fetch_file(str(source), layer_filename(layer)), k or k_from_name(str(source))
