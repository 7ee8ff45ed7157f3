"""Export a feature index in Neuronpedia's bulk-import layout (what its ``/api/admin/import`` route reads from
``v1/<model_id>/<source_id>/``, as SAEDashboard's exporter and ``neuronpedia-utils`` write it)::

    <out>/<model_id>/<layer>-<source_set>/ model.jsonl sourceset.jsonl source.jsonl release.jsonl
        features/batch-<n>.jsonl.gz       one Neuron row per feature that fired (index, maxActApprox, frac_nonzero,
                                          histogram, logit table when a Lab is given)
        activations/batch-<n>.jsonl.gz    one Activation row per context: the top contexts (binMin = binMax =
                                          binContains = -1, Neuronpedia's "Top Activations" group) and the
                                          quantile samples (binMin / binMax: their interval, binContains: the
                                          share of firings in it)

The importer's rules (hijohnnylin/neuronpedia ``apps/webapp/app/api/admin/import/route.ts`` and
``apps/webapp/lib/db/import.ts``) that shape these files: metadata lines go to Prisma's ``create`` whole, so they
carry only real fields of their model; a bulk file's columns are its FIRST line's keys, so every line of a file has
the same full key set; Activation ids have no database default, so they are generated here (deterministic, cuid
shaped); every ``creatorId`` must be an existing user (``creator_id``, default Neuronpedia's seeded bot user, whose
activations the site shows). Every file is written atomically; ids are checked so that nothing is written outside
``out``; a folder holding something other than an earlier export of the same source is refused unless
``overwrite=True``, and batch files an earlier export left and this one did not write are removed.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pandas as pd

from ..base import validate
from ..base.atomic import write_atomic
from .source import FeatureSource

if TYPE_CHECKING:
    from ..core.protocol import LabLike

# Neuronpedia's seeded bot user (apps/webapp/prisma/seed.ts): exists on every instance after `make db-init`, and
# activations are shown only for creators in PUBLIC_ACTIVATIONS_USER_IDS, which holds it by default.
DEFAULT_CREATOR_ID = "clkht01d40000jv08hvalcvly"
META_FILES = ("model.jsonl", "sourceset.jsonl", "source.jsonl", "release.jsonl")
BATCH_FOLDERS = ("features", "activations", "explanations")
BATCH_FILE = re.compile(r"batch-(0|[1-9][0-9]*)\.jsonl\.gz\Z")
TEMP_FILE = re.compile(r"\.tmp-[0-9a-f]{16}\.tmp\Z")  # base.atomic's temporary files, left by a killed write
# a path component and a Neuronpedia id at once: letters, digits, '.', '_', '-', starting with a letter or digit
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")


class StoredIndex(FeatureSource, Protocol):
    """What the export reads of a ``store.FeatureIndex`` (typed here: the index imports this module, not back)."""

    manifest: dict
    params: dict
    meta: dict

    @property
    def layers(self) -> list[int]: ...

    def check(self, lab: LabLike) -> None: ...

    def blocks(self, layer: int) -> Iterator[pd.DataFrame]: ...

    def _layer(self, layer) -> int: ...

    def _records(self, rows: pd.DataFrame) -> list[dict]: ...

    def _quantile_records(self, hist: pd.DataFrame, rows: pd.DataFrame, intervals: int, per: int) -> list[dict]: ...


def check_id(value, name: str) -> str:
    """``value`` if it is a safe id (``ID_PATTERN``: 1-128 letters, digits, '.', '_', '-', starting with a letter or
    digit, no '..'), which can be neither a path separator nor climb out of a folder; else ValueError naming
    ``name``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    if not ID_PATTERN.match(value) or ".." in value:
        raise ValueError(f"{name}={value!r} is not a safe id: use 1-128 letters, digits, '.', '_' or '-', starting "
                         f"with a letter or digit, without '..' (it names a folder and a Neuronpedia record)")
    return value


def check_source_set(value) -> str:
    """A source set name: a safe id without '__' (Neuronpedia reads ``<layer>-<set>__<suffix>`` source ids)."""
    value = check_id(value, "source_set")
    if "__" in value:
        raise ValueError(f"source_set={value!r} contains '__', which Neuronpedia reads as the start of a source id "
                         f"suffix; use single '_' or '-'")
    return value


def default_model_id(model: str) -> str:
    """A Neuronpedia model id from a model name: its last path part, lower-cased, other characters as '-'."""
    name = re.sub(r"[^a-z0-9._-]+", "-", model.split("/")[-1].lower()).strip("-._")
    return re.sub(r"\.{2,}", ".", name)[:128] or "model"


def source_folder(out, model_id: str, source_id: str) -> Path:
    """``out/<model_id>/<source_id>``, refused (ValueError) when it would resolve outside ``out`` (an id that is
    not safe, or a symbolic link inside ``out`` that points elsewhere)."""
    check_id(model_id, "model_id")
    check_id(source_id, "source id")
    root = Path(out)
    folder = root / model_id / source_id
    real_root, real = os.path.realpath(root), os.path.realpath(folder)
    if os.path.commonpath([real_root, real]) != real_root or real == real_root:
        raise ValueError(f"the export folder {folder} resolves to {real}, outside {real_root}: refusing to write there")
    return folder


def _cuid(key: str) -> str:
    """A deterministic cuid-shaped id (25 characters: 'c' and 24 base-36 digits) of ``key``."""
    n = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:16], "big")
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = []
    for _ in range(24):
        n, r = divmod(n, 36)
        out.append(digits[r])
    return "c" + "".join(out)


def _activation(model_id: str, source_id: str, feature: int, row, creator_id: str, bins: tuple) -> dict:
    """One Activation row; every row of every file carries exactly these keys (the importer's first-line rule)."""
    values = [float(v) for v in row["values"]]
    kind = "top" if bins[0] == -1 else "sample"
    key = f"{model_id}/{source_id}/{feature}/{kind}/{row['document']}/{row['position']}"
    top = int(np.argmax(values)) if values else 0
    return {"id": _cuid(key), "modelId": model_id, "layer": source_id, "index": str(feature),
            "creatorId": creator_id, "tokens": [str(t) for t in row["tokens"]], "values": values,
            "maxValue": values[top] if values else 0.0, "maxValueTokenIndex": top,
            "minValue": min(values) if values else 0.0, "qualifyingTokenIndex": int(row["center"]),
            "dataIndex": str(row["document"]), "dataSource": str(row["source"]),
            "binMin": bins[0], "binMax": bins[1], "binContains": bins[2],
            "dfaValues": [], "dfaTargetIndex": None, "dfaMaxValue": None, "lossValues": [],
            "logitContributions": None}


def _logit_tables(lab: LabLike, layer: int, features: list[int], n: int = 10) -> dict[int, tuple]:
    """Per feature, (top tokens, values, bottom tokens, values) of ``W_dec[:, f] @ W_U`` (as
    ``features.logit_table``), computed for many features per matmul."""
    import torch

    unembed = lab.hf_model.get_output_embeddings().weight.detach().float()
    w_dec = lab.sae(layer).W_dec
    out = {}
    for start in range(0, len(features), 256):
        chunk = features[start:start + 256]
        logits = (w_dec[:, chunk].float().to(unembed.device).T @ unembed.T).cpu()
        top, bottom = torch.topk(logits, n, dim=-1), torch.topk(logits, n, dim=-1, largest=False)
        for i, f in enumerate(chunk):
            out[f] = (lab.token_strings(top.indices[i].tolist()), top.values[i].tolist(),
                      lab.token_strings(bottom.indices[i].tolist()), bottom.values[i].tolist())
    return out


def _line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n"


def _write(path: Path, data: str | bytes) -> None:
    """Atomically replace ``path`` (a symbolic link there is removed, never written through)."""
    if path.is_symlink():
        path.unlink()
    write_atomic(path, data)


def _is_previous_export(folder: Path, model_id: str, source_id: str) -> bool:
    """Whether ``folder`` holds only what an export of (``model_id``, ``source_id``) writes."""
    try:
        source = json.loads((folder / "source.jsonl").read_text(encoding="utf-8").splitlines()[0])
    except (OSError, ValueError, IndexError):
        return False
    if not isinstance(source, dict) or (source.get("id"), source.get("modelId")) != (source_id, model_id):
        return False
    for entry in folder.iterdir():
        if entry.is_symlink():
            return False
        if entry.name in META_FILES or TEMP_FILE.match(entry.name):
            if not entry.is_file():
                return False
        elif entry.name in BATCH_FOLDERS and entry.is_dir():
            if any(f.is_symlink() or not f.is_file() or not (BATCH_FILE.match(f.name) or TEMP_FILE.match(f.name))
                   for f in entry.iterdir()):
                return False
        else:
            return False
    return True


def _prepare(folder: Path, model_id: str, source_id: str, overwrite: bool) -> None:
    """Refuse a non-empty folder that is not an earlier export of this source (unless ``overwrite``); clear what
    stands in the way of the files this export writes (links, a file where a folder goes)."""
    if folder.is_dir() and any(folder.iterdir()) and not overwrite \
            and not _is_previous_export(folder, model_id, source_id):
        raise FileExistsError(f"{folder} is not empty and is not an earlier Neuronpedia export of {model_id}/"
                              f"{source_id}: choose another folder, or pass overwrite=True (--overwrite) to write "
                              f"into it (files of other names are kept)")
    if folder.exists() and not folder.is_dir():
        if not overwrite:
            raise FileExistsError(f"{folder} is a file, not a folder; pass overwrite=True to replace it")
        folder.unlink()
    for sub in BATCH_FOLDERS:
        path = folder / sub
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            path.unlink()


def _remove_stale(folder: Path, written: dict[str, set[str]]) -> None:
    """Remove the batch files (and left temporary files) this export did not write, and empty batch folders."""
    for sub in BATCH_FOLDERS:
        path = folder / sub
        if not path.is_dir():
            continue
        for entry in path.iterdir():
            if (BATCH_FILE.match(entry.name) or TEMP_FILE.match(entry.name)) and entry.name not in written.get(sub, ()):
                entry.unlink()
        if not any(path.iterdir()):
            path.rmdir()
    for entry in folder.iterdir():
        if TEMP_FILE.match(entry.name):
            entry.unlink()


def _bins(counts: np.ndarray, lowers: np.ndarray, uppers: np.ndarray, lower: float, upper: float,
          peak: float) -> tuple[float, float, float]:
    """(binMin, binMax, binContains) of a quantile interval: its bounds (the open top bin cut at the feature's
    peak) and the share of the feature's firings (its histogram's ``counts`` over ``lowers`` / ``uppers``) in it."""
    total = counts.sum()
    share = float(counts[(lowers >= lower) & (uppers <= upper)].sum() / total) if total else 0.0
    return float(lower), float(min(upper, max(peak, lower))), share


def export_neuronpedia(index: StoredIndex, out, model_id: str | None = None, source_set: str = "qscope-res",
                       layers=None, lab: LabLike | None = None, features_per_file: int = 128,
                       creator: str = "qscope-lab", creator_id: str = DEFAULT_CREATOR_ID,
                       release: str | None = None, overwrite: bool = False) -> list[Path]:
    """Write the bulk-import folders of ``layers`` (default: all) under ``out``; returns one folder per layer.

    ``model_id`` (default: the model name's last part, lower-cased), ``source_set``, ``release`` (the source
    release's name, default ``source_set``) and ``creator_id`` are checked safe ids (ValueError naming the argument
    otherwise); ``creator_id`` must be a user of the Neuronpedia instance (default: its seeded bot user);
    ``creator`` is the creator's display name. With ``lab`` (built for the index's model and suite) the logit
    tables (pos_str / neg_str) are filled and the model's layer count is exact (else the index's last layer + 1).
    A source folder that holds anything but an earlier export of the same source is refused unless
    ``overwrite=True``; batch files of an earlier export that this one does not write are removed. Reads each
    layer once, a block of features at a time; every file is written atomically."""
    if lab is not None:
        index.check(lab)
    features_per_file = validate.integer(features_per_file, "features_per_file", minimum=1)
    model_id = check_id(default_model_id(index.manifest["model"]) if model_id is None else model_id, "model_id")
    source_set = check_source_set(source_set)
    release = check_id(source_set if release is None else release, "release")
    creator_id = check_id(creator_id, "creator_id")
    if not isinstance(creator, str) or not creator.strip():
        raise ValueError(f"creator must be a non-empty display name, got {creator!r}")
    layers = index.layers if layers is None else [index._layer(x) for x in validate.layers(layers, 1 << 20)]
    folders = {layer: source_folder(out, model_id, f"{layer}-{source_set}") for layer in layers}
    for layer, folder in folders.items():  # every folder checked before anything is written
        _prepare(folder, model_id, f"{layer}-{source_set}", overwrite)
    for layer, folder in folders.items():
        _export_layer(index, folder, layer, model_id, source_set, release, lab, features_per_file, creator,
                      creator_id)
    return list(folders.values())


def _metadata(index: StoredIndex, layer: int, model_id: str, source_id: str, source_set: str, release: str,
              n_layers: int, creator: str, creator_id: str) -> dict[str, dict]:
    """model / sourceset / source / release records: only fields of Neuronpedia's Prisma models (``create`` is
    passed the line whole, and rejects an unknown key); foreign keys to rows imported later are left out."""
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    model = index.manifest["model"]
    suite = index.manifest["sae_suite"]
    return {
        "release.jsonl": {"name": release, "description": f"qscope-lab feature index of {model} ({suite})",
                          "descriptionShort": f"qscope-lab index of {model}", "creatorName": creator,
                          "creatorId": creator_id, "urls": [], "visibility": "PUBLIC", "createdAt": now},
        "model.jsonl": {"id": model_id, "displayName": model, "displayNameShort": model_id, "creatorId": creator_id,
                        "layers": n_layers, "neuronsPerLayer": 0,
                        "owner": model.split("/")[0] if "/" in model else creator,
                        "visibility": "PUBLIC", "instruct": False, "inferenceEnabled": False,
                        "createdAt": now, "updatedAt": now},
        "sourceset.jsonl": {"modelId": model_id, "name": source_set, "description": f"{suite} (residual stream)",
                            "creatorName": creator, "creatorId": creator_id, "releaseName": release, "urls": [],
                            "visibility": "PUBLIC", "hasDashboards": True, "allowInferenceSearch": False,
                            "createdAt": now},
        "source.jsonl": {"id": source_id, "modelId": model_id, "setName": source_set, "creatorId": creator_id,
                         "visibility": "PUBLIC", "hasDashboards": True, "inferenceEnabled": False,
                         "hfRepoId": suite, "hfFolderId": f"layer{layer}", "num_prompts": int(index.meta["chunks"]),
                         "num_tokens_in_prompt": int(index.params["context_length"]),
                         "dataset": f"qscope-lab corpus {index.manifest['corpus'].get('fingerprint', '')}".strip(),
                         "createdAt": now},
    }


def _export_layer(index: StoredIndex, folder: Path, layer: int, model_id: str, source_set: str, release: str,
                  lab: LabLike | None, features_per_file: int, creator: str, creator_id: str) -> None:
    source_id = f"{layer}-{source_set}"
    cap = index.params["samples_per_bin"]
    n_layers = lab.n_layers if lab is not None else max(index.layers) + 1
    for sub in ("features", "activations"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    meta = _metadata(index, layer, model_id, source_id, source_set, release, n_layers, creator, creator_id)
    for name, record in meta.items():
        _write(folder / name, _line(record))
    stats = index.stats(layer)
    fired = stats[stats.firing_count > 0].feature.tolist()
    logits = _logit_tables(lab, layer, fired) if lab is not None else {}
    features: list[dict] = []
    activations: list[dict] = []
    written: dict[str, set[str]] = {"features": set(), "activations": set()}

    def flush() -> None:
        n = len(written["features"])
        for sub, rows in (("features", features), ("activations", activations)):
            name = f"batch-{n}.jsonl.gz"
            data = "".join(_line(row) for row in rows).encode("utf-8")
            _write(folder / sub / name, gzip.compress(data, compresslevel=5, mtime=0))
            written[sub].add(name)
        features.clear()
        activations.clear()

    for block in index.blocks(layer):
        for f, part in block.groupby("feature", sort=True):
            f = int(f)
            hist = index.histogram(layer, f)
            counts, lowers, uppers = (hist[c].to_numpy() for c in ("count", "lower", "upper"))
            peak = float(stats.max_activation.iat[f])
            pos_str, pos_values, neg_str, neg_values = logits.get(f, ([], [], [], []))
            features.append({
                "modelId": model_id, "layer": source_id, "index": str(f), "sourceSetName": source_set,
                "creatorId": creator_id, "hasVector": False, "maxActApprox": peak,
                "frac_nonzero": float(stats.firing_rate.iat[f]),
                "freq_hist_data_bar_heights": counts.astype(float).tolist(),
                "freq_hist_data_bar_values": ((lowers + np.minimum(uppers, lowers * 10)) / 2).tolist(),
                "pos_str": [str(s) for s in pos_str], "pos_values": [float(v) for v in pos_values],
                "neg_str": [str(s) for s in neg_str], "neg_values": [float(v) for v in neg_values]})
            for row in index._records(part[part.kind == 0]):
                activations.append(_activation(model_id, source_id, f, row, creator_id, (-1.0, -1.0, -1.0)))
            for row in index._quantile_records(hist, part, 5, cap):
                bins = _bins(counts, lowers, uppers, row["lower"], row["upper"], peak)
                activations.append(_activation(model_id, source_id, f, row, creator_id, bins))
            if len(features) >= features_per_file:
                flush()
    if features:
        flush()
    _remove_stale(folder, written)  # the index holds no explanations: an earlier export's are stale too
