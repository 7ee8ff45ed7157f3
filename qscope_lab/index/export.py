"""Export a feature index in Neuronpedia's bulk-import layout (as SAEDashboard's exporter and
``neuronpedia-utils`` write it), so it can be uploaded or compared with Neuronpedia's dashboards::

    <out>/<model_id>/<layer>-<source_set>/ model.jsonl sourceset.jsonl source.jsonl release.jsonl
        features/batch-<n>.jsonl.gz       one feature per line (index, maxActApprox, frac_nonzero, histogram,
                                          logit table when a Lab is given)
        activations/batch-<n>.jsonl.gz    one context per line (tokens, values, maxValue, maxValueTokenIndex,
                                          binMin / binMax for quantile samples)
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pandas as pd

from ..base import validate
from .source import FeatureSource

if TYPE_CHECKING:
    from ..core.protocol import LabLike


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


def _activation(model_id: str, source_id: str, feature: int, row, kind: str) -> dict:
    values = [float(v) for v in row["values"]]
    key = f"{model_id}/{source_id}/{feature}/{kind}/{row['document']}/{row['position']}"
    out = {"id": hashlib.sha1(key.encode()).hexdigest()[:25], "tokens": list(row["tokens"]), "index": str(feature),
           "layer": source_id, "modelId": model_id, "maxValue": max(values), "maxValueTokenIndex":
           int(max(range(len(values)), key=values.__getitem__)), "minValue": min(values), "values": values,
           "qualifyingTokenIndex": int(row["center"]), "dataIndex": str(row["document"]),
           "dataSource": row["source"]}
    if kind == "sample":
        out.update(binMin=float(row["lower"]), binMax=float(row["upper"]), binContains=None)
    return out


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


def export_neuronpedia(index: StoredIndex, out, model_id: str | None = None, source_set: str = "qscope-res",
                       layers=None, lab: LabLike | None = None, features_per_file: int = 128,
                       creator: str = "qscope-lab") -> list[Path]:
    """Write the bulk-import folders of ``layers`` (default: all) under ``out``; returns one folder per layer.
    With ``lab`` (built for the index's model and suite) the logit tables (pos_str / neg_str) are filled.
    Reads each layer once, a block of features at a time."""
    if lab is not None:
        index.check(lab)
    features_per_file = validate.integer(features_per_file, "features_per_file", minimum=1)
    model_id = model_id or index.manifest["model"].split("/")[-1].lower()
    layers = index.layers if layers is None else [index._layer(x) for x in validate.layers(layers, 1 << 20)]
    cap = index.params["samples_per_bin"]
    folders = []
    for layer in layers:
        source_id = f"{layer}-{source_set}"
        folder = Path(out) / model_id / source_id
        for sub in ("features", "activations"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        meta = {"model.jsonl": {"id": model_id, "displayName": index.manifest["model"], "creatorId": creator},
                "sourceset.jsonl": {"modelId": model_id, "name": source_set, "creatorName": creator,
                                    "description": f"{index.manifest['sae_suite']} (residual stream)",
                                    "visibility": "PUBLIC"},
                "source.jsonl": {"id": source_id, "modelId": model_id, "setName": source_set, "visibility": "PUBLIC",
                                 "hfRepoId": index.manifest["sae_suite"], "hfFolderId": f"layer{layer}",
                                 "num_prompts": index.meta["chunks"],
                                 "num_tokens_in_prompt": index.params["context_length"]},
                "release.jsonl": {"name": source_set, "description": f"qscope-lab index of {index.manifest['model']}",
                                  "creatorName": creator}}
        for name, record in meta.items():
            (folder / name).write_text(json.dumps(record) + "\n", encoding="utf-8")
        stats = index.stats(layer)
        fired = stats[stats.firing_count > 0].feature.tolist()
        logits = _logit_tables(lab, layer, fired) if lab is not None else {}
        features, activations, n = [], [], 0

        def flush(folder=folder):
            nonlocal features, activations, n
            for sub, rows in (("features", features), ("activations", activations)):
                with gzip.open(folder / sub / f"batch-{n}.jsonl.gz", "wt", encoding="utf-8", compresslevel=5) as handle:
                    for row in rows:
                        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            features, activations, n = [], [], n + 1

        for block in index.blocks(layer):
            for f, part in block.groupby("feature", sort=True):
                f = int(f)
                hist = index.histogram(layer, f)
                pos_str, pos_values, neg_str, neg_values = logits.get(f, ([], [], [], []))
                features.append({
                    "modelId": model_id, "layer": source_id, "index": str(f), "creatorId": creator,
                    "maxActApprox": float(stats.max_activation.iat[f]),
                    "frac_nonzero": float(stats.firing_rate.iat[f]),
                    "freq_hist_data_bar_heights": hist["count"].tolist(),
                    "freq_hist_data_bar_values": ((hist.lower + hist.upper.clip(upper=hist.lower * 10)) / 2).tolist(),
                    "pos_str": pos_str, "pos_values": pos_values, "neg_str": neg_str, "neg_values": neg_values})
                for row in index._records(part[part.kind == 0]):
                    activations.append(_activation(model_id, source_id, f, row, "top"))
                for row in index._quantile_records(hist, part, 5, cap):
                    activations.append(_activation(model_id, source_id, f, row, "sample"))
                if len(features) >= features_per_file:
                    flush()
        if features:
            flush()
        folders.append(folder)
    return folders
