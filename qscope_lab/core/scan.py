"""The one scan loop: texts in, batches of traced forwards out, with the positions that count marked.

Every reader of activations (``Lab.encode``, the classifier, coverage, synthesis, language statistics, SAE
training, reconstruction) walks texts the same way: tokenized once, sorted by length within chunks (so batches
carry little padding), left-padded, one traced forward per batch for all the layers asked, stopped after the
last of them. A position counts when it is a real token, not a special token (``skip_special``) and not the
first one, the attention sink (``skip_first``). Nothing outlives its batch, so memory stays flat in the number
of texts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..base import progress as progress_bars

if TYPE_CHECKING:
    from .protocol import LabLike

CHUNK = 256  # texts sorted by length within a chunk, so batches carry little padding


def counted_positions(attention_mask: torch.Tensor, skip_first: bool) -> torch.Tensor:
    """[batch, seq] bool: real (non-pad) positions, without each row's first one (the attention sink) if
    ``skip_first``. Works under left padding, where the first real token is not in column 0."""
    real = attention_mask.bool()
    if not skip_first:
        return real
    counted = real.clone()
    counted[torch.arange(real.shape[0]), real.float().argmax(dim=-1)] = False
    return counted


@dataclass
class Batch:
    """One forward's worth of texts. ``index``: their positions in the scanned list; ``token_ids``: each row's
    ids unpadded; ``enc``: the left-padded batch; ``real`` / ``counted``: ``[batch, seq]`` masks;
    ``residuals``: ``{layer: [batch, seq, d_model]}`` block outputs (empty when no layer was asked)."""

    index: torch.Tensor
    token_ids: list[list[int]]
    enc: dict
    real: torch.Tensor
    counted: torch.Tensor
    residuals: dict

    def __len__(self) -> int:
        return len(self.index)

    def sparse(self, layer: int, sae) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(row of each counted token, values ``[n, k]``, indices ``[n, k]``) of the SAE's top-k, on the CPU."""
        values, indices = sae.encode_sparse(self.residuals[layer][self.counted])
        return self.counted.nonzero()[:, 0].cpu(), values.float().cpu(), indices.cpu()

    def feature_max(self, layer: int, sae, features: Sequence[int]) -> torch.Tensor:
        """``[batch, len(features)]``: each feature's largest activation over a row's counted tokens (0 if it
        never fires there). Only the k active features of each token are looked at."""
        rows, values, indices = self.sparse(layer, sae)
        column = torch.full((sae.d_sae,), -1, dtype=torch.long)
        column[torch.as_tensor(list(features), dtype=torch.long)] = torch.arange(len(features))
        cols = column[indices]
        keep = (cols >= 0) & (values > 0)
        slot = rows.unsqueeze(1).expand_as(indices)[keep] * len(features) + cols[keep]
        best = torch.zeros(len(self) * len(features)).scatter_reduce_(0, slot, values[keep], "amax")
        return best.view(len(self), len(features))


def scan(lab: LabLike, texts: list[str], layers: Sequence[int] = (), batch_size: int = 16,
         max_length: int | None = None, skip_first: bool = True, skip_special: bool = True, chunk: int = CHUNK,
         progress: bool | None = None, desc: str = "scan") -> Iterator[Batch]:
    """Yield a ``Batch`` per ``batch_size`` texts (validated texts, checked layers; see the module docstring).
    Rows of token ids (lists of int, e.g. documents chunked to a context length) pass through untokenized.

    With ``layers`` empty no forward runs: callers that need their own forward (reconstruction) still get the
    batching and the masks. ``progress``: the library's rule (a bar beyond 500 texts) unless True / False."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    layers = sorted({lab.check_layer(x) for x in layers})
    special = torch.tensor(sorted(lab.tokenizer.all_special_ids or []), dtype=torch.long, device=lab.device)
    with progress_bars.bar(len(texts), progress, desc) as bar:
        for start in range(0, len(texts), chunk):
            stop = min(start + chunk, len(texts))
            part = texts[start:stop]
            ids = ([list(row)[:max_length] if max_length else list(row) for row in part]
                   if part and not isinstance(part[0], str) else lab.token_ids(part, max_length))
            order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
            for b in range(0, len(order), batch_size):
                rows = order[b:b + batch_size]
                row_ids = [ids[i] for i in rows]
                enc = lab.pad(row_ids)
                real = enc["attention_mask"].bool()
                counted = counted_positions(enc["attention_mask"], skip_first)
                if skip_special and len(special):
                    counted &= ~torch.isin(enc["input_ids"], special)
                residuals = lab.residuals(enc, layers) if layers else {}
                yield Batch(torch.tensor([start + i for i in rows]), row_ids, enc, real, counted, residuals)
                bar.update(len(rows))
