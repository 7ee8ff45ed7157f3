"""core.hooks.edit_blocks: the one place a block's output is edited; checked on a real tiny Qwen3."""

from __future__ import annotations

import threading

import pytest
import torch

from qscope_lab.core.hooks import edit_blocks


def _logits(lab, enc):
    with torch.no_grad():
        return lab.hf_model(**enc).logits


def test_edit_changes_the_forward_and_leaves_nothing_behind(lab):
    enc = lab.tokenize(["The cat sat on the mat."])
    clean = _logits(lab, enc)
    seen = {}

    def zero(h):
        seen["shape"] = tuple(h.shape)
        return torch.zeros_like(h)

    with edit_blocks(lab.blocks, {1: zero}):
        edited = _logits(lab, enc)
    assert seen["shape"] == (1, enc["input_ids"].shape[1], lab.d_model)
    assert not torch.allclose(edited, clean)
    assert torch.equal(_logits(lab, enc), clean)  # hooks removed on exit
    assert all(not block._forward_hooks for block in lab.blocks)


def test_read_only_edit_is_bit_for_bit_the_model(lab):
    enc = lab.tokenize(["猫坐在垫子上。"])
    clean = _logits(lab, enc)
    kept = []
    with edit_blocks(lab.blocks, {0: kept.append, 3: lambda h: h}):
        same = _logits(lab, enc)
    assert torch.equal(same, clean) and len(kept) == 1


def test_hooks_are_removed_when_an_edit_raises(lab):
    enc = lab.tokenize(["42"])

    class Stop(Exception):
        pass

    def stop(h):
        raise Stop

    with pytest.raises(Stop), edit_blocks(lab.blocks, {2: stop}):
        _logits(lab, enc)
    assert all(not block._forward_hooks for block in lab.blocks)


@pytest.mark.parametrize("this_thread_only", [True, False])
def test_other_threads_see_the_clean_model_unless_asked(lab, this_thread_only):
    enc = lab.tokenize(["def add(a, b):"])
    clean = _logits(lab, enc)
    out = {}
    with edit_blocks(lab.blocks, {1: torch.zeros_like}, this_thread_only=this_thread_only):
        worker = threading.Thread(target=lambda: out.update(logits=_logits(lab, enc)))
        worker.start()
        worker.join()
    assert torch.equal(out["logits"], clean) == this_thread_only
