"""One shard's partial statistics: its documents chunked to the context length and run through the one scan
loop, every layer's sparse codes folded into a ``Partial``. Every engine runs this, on whatever machine.

A job under a memory budget indexes its layers in groups, one pass over the corpus each. So that the later passes
do not run the forward again from the embeddings, a pass saves the block output at its group's last layer per
batch (``boundary_out``), and the next one starts there (``boundary_in``): nnsight skips the blocks before it and
feeds the saved output on, so the layers of the group see exactly the values a whole forward gives them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..core.scan import scan
from ..core.tokens import TokenKeys
from .corpus import Document
from .hashes import position_key, window_keys
from .partial import Partial
from .rows import token_windows

if TYPE_CHECKING:
    from ..core.protocol import LabLike


DONE = "complete"  # marks a shard's boundary folder whose every batch was written


def residuals_from(lab: LabLike, enc: dict, layers: list[int], start: int, hidden: torch.Tensor) -> dict:
    """Block outputs at ``layers`` (all after ``start``) of the batch ``enc``, the blocks up to ``start`` skipped
    and ``hidden`` (block ``start``'s output for this very batch) fed on: what ``lab.residuals`` gives, bit for
    bit, without running the first ``start + 1`` blocks again."""
    saved: dict[int, torch.Tensor] = {}
    with torch.no_grad(), lab.model.trace(dict(enc)) as tracer:
        for layer in range(start + 1):
            lab.layers[layer].skip(hidden)
        for layer in layers:
            saved[layer] = lab.layers[layer].output
        tracer.stop()
    return saved


def compute_shard(lab: LabLike, shard: int, docs: list[Document], layers: list[int], params: dict, *,
                  saes: dict | None = None, pending_bytes: int | None = None, boundary_in: Path | None = None,
                  start: int | None = None, boundary_out: Path | None = None) -> Partial:
    """The partial statistics of one shard's documents at ``layers`` (what every engine runs, on whatever
    machine). ``saes``: the layers' SAEs, already loaded (else ``lab.sae``); ``boundary_in``: the shard's saved
    block outputs at layer ``start`` (a pass of an earlier layer group), where the forward starts when they are
    all there; ``boundary_out``: where to save the block outputs at the last of ``layers`` for the next group."""
    saes = saes or {layer: lab.sae(layer) for layer in layers}
    part = Partial(layers, saes[layers[0]].d_sae, params, pending_bytes)
    part.shards, part.documents = [shard], len(docs)
    ctx_len = params["context_length"]
    rows, meta = [], []
    # the tokenizer directly, not lab.token_ids: that cuts a text to the model's positions, and documents are
    # chunked below instead, whole (verbose=False: no "longer than the model's maximum length" log either)
    for doc, ids in zip(docs, lab.tokenizer([d.text for d in docs], verbose=False)["input_ids"]):
        src = part.source_id(doc.source)
        for offset in range(0, len(ids), ctx_len):
            rows.append(ids[offset:offset + ctx_len])
            meta.append((doc.id, offset, src))
    part.chunks = len(rows)
    if not rows:
        return part
    meta = np.asarray(meta, dtype=np.int64)
    replay = boundary_in is not None and start is not None and (boundary_in / DONE).is_file()
    out = None
    if boundary_out is not None:
        out = boundary_out.with_name(boundary_out.name + ".tmp")
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
    for b, batch in enumerate(scan(lab, rows, [] if replay else layers, batch_size=params["batch_size"],
                                   skip_first=params["skip_first"], skip_special=params["skip_special"],
                                   progress=False)):
        residuals = batch.residuals
        if replay:
            assert boundary_in is not None and start is not None
            hidden = torch.load(boundary_in / f"{b:05d}.pt", map_location=lab.device, weights_only=True)
            residuals = residuals_from(lab, batch.enc, layers, start, hidden)
            del hidden
        if out is not None:
            torch.save(residuals[layers[-1]].detach().clone(), out / f"{b:05d}.pt")
        counted = batch.counted.cpu()
        tok_row, tok_col = (x.numpy() for x in counted.nonzero(as_tuple=True))
        info = meta[batch.index.numpy()]
        input_ids = batch.enc["input_ids"].cpu().numpy()
        pad = input_ids.shape[1] - np.array([len(r) for r in batch.token_ids])
        tok_doc, tok_pos = info[tok_row, 0], (info[tok_row, 1] + tok_col - pad[tok_row]).astype(np.int32)
        # the batch as every layer's update reads it: per counted token its chunk row and column, document,
        # position there, source, the (document, position) part of its hash and its window of token ids
        ctx = {"tok_row": tok_row, "tok_col": tok_col, "pad": pad, "input_ids": input_ids,
               "n_sources": len(part.sources), "tok_doc": tok_doc, "tok_pos": tok_pos,
               "tok_src": info[tok_row, 2].astype(np.int16), "tok_key": position_key(tok_doc, tok_pos),
               "tok_window": token_windows(input_ids, pad, tok_row, tok_col, params["window"])}
        if params["distinct_contexts"]:  # what keeps a feature's top contexts distinct: the text each window shows
            ctx["tok_window_key"] = window_keys(TokenKeys.of(lab)(ctx["tok_window"]))
        for src, n in zip(*np.unique(info[tok_row, 2], return_counts=True)):
            part.tokens_by_source[int(src)] += int(n)
        for layer in layers:
            # the codes stay where the SAE ran: counts and the candidate filter are done there (``update``)
            values, indices = saes[layer].encode_sparse(residuals[layer][batch.counted])
            part.by_layer[layer].update(ctx, values, indices)
        del residuals
    for layer_part in part.by_layer.values():
        layer_part.release()  # the tables a device held, back on the host
    if out is not None and boundary_out is not None:
        (out / DONE).touch()
        shutil.rmtree(boundary_out, ignore_errors=True)
        os.replace(out, boundary_out)
    return part
