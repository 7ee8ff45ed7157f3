"""Issue 17's speed-ups keep behaviour: hooks that leave nothing behind, a first card that previews and then
fills in to exactly the whole-corpus card, lazy imports that really are lazy. (Timings: benchmarks/speed_bench.py.)"""

import asyncio
import subprocess
import sys

import pytest
import torch

from qscope_lab import Lab
from qscope_lab.analysis.reference import PREVIEW_STRIDE, Reference, default_texts
from qscope_lab.core.models import find_layers


@pytest.fixture(scope="module")
def embedded_lab():
    return Lab.load()


def _hook_counts(lab):
    return [len(block._forward_hooks) for block in find_layers(lab.hf_model)[1]]


def test_generation_hooks_are_removed_even_on_error(lab):
    before = _hook_counts(lab)
    lab.generate("Hello", steer={(1, 4): 20.0, (3, 9): -2.0}, max_new_tokens=3)
    assert _hook_counts(lab) == before
    with pytest.raises(IndexError, match="outside a prompt"):
        lab.generate("Hello", layer=1, steer={4: 1.0}, positions=[50], max_new_tokens=3)
    assert _hook_counts(lab) == before


def test_steering_hook_leaves_other_threads_alone(lab):
    """A forward on another thread while a steered generation holds its hooks sees the clean model."""
    import threading

    enc = lab.tokenize(["The cat sat on the mat."])
    clean = lab.hf_model(**enc).logits
    seen = {}

    def streamer_put(_):  # runs inside generate, on the generating thread, with the hooks in place
        if "logits" not in seen:
            worker = threading.Thread(target=lambda: seen.update(logits=lab.hf_model(**enc).logits))
            worker.start()
            worker.join()

    class Streamer:
        put, end = staticmethod(streamer_put), staticmethod(lambda: None)

    with torch.no_grad():
        lab.generate("Hello", layer=1, steer={4: 50.0}, max_new_tokens=3, baseline=False, streamer=Streamer())
    assert torch.equal(seen["logits"], clean.detach())


def test_first_card_previews_then_fills_in_to_the_whole_corpus_card(embedded_lab):
    from qscope_lab.widgets import FeatureCard

    lab, texts = embedded_lab, default_texts()[:96]
    layer, feature = 2, 11
    whole = FeatureCard(lab, layer, feature, reference=Reference(lab, texts))  # no event loop: whole corpus

    async def in_a_kernel():
        ref = Reference(lab, texts)
        card = FeatureCard(lab, layer, feature, reference=ref)  # an event loop runs: a preview first
        first = dict(card.stats)
        for _ in range(200):
            if ref.ready(layer):
                break
            await asyncio.sleep(0)
        return ref, card, first

    ref, card, first = asyncio.run(in_a_kernel())
    assert not first["complete"] and first["texts"] == len(range(0, len(texts), PREVIEW_STRIDE))
    assert ref.ready(layer) and card.stats["complete"] and card.stats["texts"] == len(texts)
    assert card.stats["tokens"] == whole.stats["tokens"] and card.stats["firing_count"] == whole.stats["firing_count"]
    assert [c["token"] for c in card.contexts] == [c["token"] for c in whole.contexts]
    assert card.stats["max_activation"] == pytest.approx(whole.stats["max_activation"], rel=1e-4)
    full, merged = whole.reference.acts(layer), ref.acts(layer)
    assert full.token_ids == merged.token_ids and torch.equal(full.mask, merged.mask)
    assert (full.indices == merged.indices).float().mean() > 0.99  # batch padding may swap near-ties
    assert torch.allclose(full.values, merged.values, atol=1e-4)


def test_wait_finishes_a_fill_without_the_event_loop(embedded_lab):
    texts = default_texts()[:64]

    async def start():
        ref = Reference(embedded_lab, texts)
        preview = ref.current(1)
        return ref, preview

    ref, preview = asyncio.run(start())  # the loop closed before the fill could run
    assert len(preview) == len(texts) // PREVIEW_STRIDE and not ref.ready(1)
    called = []
    ref.on_ready(1, lambda: called.append(1))
    assert len(ref.acts(1)) == len(texts) and ref.ready(1) and called == [1]


@pytest.mark.parametrize("statement, absent", [
    ("import qscope_lab.widgets", "altair"),
    ("from qscope_lab.cli.main import main; main(['saes'])", "pandas"),
])
def test_imports_stay_lazy(statement, absent):
    script = f"import sys\n{statement}\nassert {absent!r} not in sys.modules, sorted(sys.modules)[:0]\nprint('ok')"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def test_saes_table_prints_every_group_and_column():
    from qscope_lab.cli.saes import text_table
    from qscope_lab.saes.registry import registry_frame, registry_rows

    lines = text_table(registry_rows()).splitlines()
    assert len(lines) == 15 and lines[0].split() == list(registry_frame().columns)
    assert lines[1].split()[0] == "Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50" and lines[1].split()[-1] == "15.0"
