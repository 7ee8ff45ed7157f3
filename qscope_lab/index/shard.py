"""One shard's partial statistics: its documents chunked to the context length and run through the one scan
loop, every layer's sparse codes folded into a ``Partial``. Every engine runs this, on whatever machine."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..core.scan import scan
from .corpus import Document
from .hashes import position_key
from .partial import Partial
from .rows import token_windows

if TYPE_CHECKING:
    from ..core.protocol import LabLike


def compute_shard(lab: LabLike, shard: int, docs: list[Document], layers: list[int], params: dict) -> Partial:
    """The partial statistics of one shard's documents (what every engine runs, on whatever machine)."""
    part = Partial(layers, lab.sae(layers[0]).d_sae, params)
    part.shards, part.documents = [shard], len(docs)
    ctx_len = params["context_length"]
    rows, meta = [], []
    # the tokenizer directly, not lab.token_ids: that cuts a text to the model's positions, and documents are
    # chunked below instead, whole (verbose=False: no "longer than the model's maximum length" log either)
    for doc, ids in zip(docs, lab.tokenizer([d.text for d in docs], verbose=False)["input_ids"]):
        src = part.source_id(doc.source)
        for start in range(0, len(ids), ctx_len):
            rows.append(ids[start:start + ctx_len])
            meta.append((doc.id, start, src))
    part.chunks = len(rows)
    if not rows:
        return part
    meta = np.asarray(meta, dtype=np.int64)
    saes = {layer: lab.sae(layer) for layer in layers}
    for batch in scan(lab, rows, layers, batch_size=params["batch_size"], skip_first=params["skip_first"],
                      skip_special=params["skip_special"], progress=False):
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
        for src, n in zip(*np.unique(info[tok_row, 2], return_counts=True)):
            part.tokens_by_source[int(src)] += int(n)
        for layer in layers:
            values, indices = saes[layer].encode_sparse(batch.residuals[layer][batch.counted])
            part.by_layer[layer].update(ctx, values.float().cpu(), indices.cpu())
    return part
