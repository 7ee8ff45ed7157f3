"""The one way the library edits a decoder block's output: ``edit_blocks``.

Steering during generation, the error-term splice of attribution, the reconstruction report, the SAE's KL
fine-tune and the SASFT loss all need the output of some decoder blocks, read or replaced, for the duration of
a call. Each goes through this context manager: it registers a plain PyTorch forward hook per block (nnsight's
per-step interventions cost ~25% of a small model's decode step; a hook costs nothing measurable), unpacks the
block's output (a tensor in transformers 5, a tuple in older blocks), hands the hidden state to the edit and
packs what it returns, and removes every hook on exit, whatever happened. By default only forwards of the
thread that entered are edited, so a background encode running meanwhile sees the clean model.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch

# edit(h) -> the block's new hidden state, or None to leave the output as it is (a read-only hook)
BlockEdit = Callable[[torch.Tensor], "torch.Tensor | None"]


@contextlib.contextmanager
def edit_blocks(blocks: torch.nn.ModuleList | Sequence[torch.nn.Module] | Mapping[int, torch.nn.Module],
                edits: Mapping[int, BlockEdit],
                *, this_thread_only: bool = True) -> Iterator[None]:
    """Within the block, decoder block ``n``'s hidden state ``h`` becomes ``edits[n](h)`` (None: unchanged).

    ``blocks`` is indexed by layer (``lab.blocks``). An exception an edit raises propagates out of the forward
    (the splice stops a forward early that way). ``this_thread_only=False`` edits every thread's forwards (a
    training loss attached for a trainer's whole run)."""
    owner = threading.get_ident() if this_thread_only else None
    handles = []

    def hook_for(edit: BlockEdit):
        def hook(module, args, output):
            if owner is not None and threading.get_ident() != owner:
                return None
            h = output[0] if isinstance(output, tuple) else output
            new = edit(h)
            if new is None or new is h:
                return None
            return (new, *output[1:]) if isinstance(output, tuple) else new

        return hook

    try:
        for layer in sorted(edits):
            handles.append(blocks[layer].register_forward_hook(hook_for(edits[layer])))
        yield
    finally:
        for handle in handles:
            handle.remove()
