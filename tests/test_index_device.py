"""The index's per-batch work on the codes' own device (index/device.py, LayerPartial.update), run here with the
CPU treated as a device apart from the host (``device.AS_IF_REMOTE``: what a GPU does, tables kept there and folded
back, only candidates and the other firings in their windows copied): the hashes, bins and sums computed with torch
equal numpy's bit for bit, a layer fed through the device filter ends in exactly the state of the numpy reference
fed every firing, and a real build through it writes the reference's files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qscope_lab.index import device
from qscope_lab.index.build import build_params
from qscope_lab.index.hashes import position_key, priority_at
from qscope_lab.index.partial import LayerPartial
from qscope_lab.index.rows import activation_bins, token_windows

U64 = st.integers(0, 2**64 - 1)


@settings(max_examples=60, deadline=None)
@given(keys=st.lists(U64, min_size=1, max_size=40), feature=st.integers(0, 2**31 - 1),
       seed=st.integers(0, 2**63 - 1))
def test_priority_bits_equal_numpy(keys, feature, seed):
    key = np.array(keys, np.uint64)
    feat = np.full(len(keys), feature, np.int64) + np.arange(len(keys))
    want = priority_at(key, feat, seed)
    got = device.priority_bits(torch.from_numpy(key.view(np.int64)), torch.from_numpy(feat), seed).numpy()
    assert (got.view(np.uint64) == want).all()


@settings(max_examples=60, deadline=None)
@given(a=st.lists(U64, min_size=2, max_size=40), b=st.lists(U64, min_size=2, max_size=40))
def test_unsigned_compare_and_min(a, b):
    n = min(len(a), len(b))
    x, y = np.array(a[:n], np.uint64), np.array(b[:n], np.uint64)
    tx, ty = torch.from_numpy(x.view(np.int64)), torch.from_numpy(y.view(np.int64))
    assert (device.ule(tx, ty).numpy() == (x <= y)).all()
    assert (device.umin(tx, ty).numpy().view(np.uint64) == np.minimum(x, y)).all()


@settings(max_examples=30, deadline=None)
@given(bpd=st.integers(1, 100), lo=st.integers(-12, 2), n_bins=st.integers(1, 512), seed=st.integers(0, 2**32 - 1))
def test_activation_bins_equal_numpy(bpd, lo, n_bins, seed):
    params = {"bins_per_decade": bpd, "min_exponent": lo, "n_bins": n_bins}
    if not device.exact_bins(params):
        return
    rng = np.random.default_rng(seed)
    top = min(lo + n_bins / bpd + 2, 38)  # float32 stops near 3.4e38
    act = (10.0 ** rng.uniform(lo - 2, top, 4000)).astype(np.float32)
    exponent = lo + np.arange(n_bins + 1) / bpd
    edges = (10.0 ** exponent[exponent < 38]).astype(np.float32)  # and the floats at every bin edge
    act = np.concatenate([act, edges, np.nextafter(edges, 0), np.nextafter(edges, np.inf)])
    got = device.activation_bins(torch.from_numpy(act), params).numpy()
    assert (got == activation_bins(act, params)).all()


def test_feature_sums_add_in_numpys_order():
    rng = np.random.default_rng(0)
    feat = rng.integers(0, 50, 20000)
    act = (10.0 ** rng.uniform(-8, 4, 20000)).astype(np.float32)  # a range where the order of adding shows
    want = np.bincount(feat, weights=act.astype(np.float64), minlength=60)
    got = device.feature_sums(torch.from_numpy(feat), torch.from_numpy(act), 60).numpy()
    assert got.tobytes() == want.tobytes()
    shuffled = np.random.default_rng(1).permutation(len(feat))  # the order does matter here: the test can fail
    assert np.bincount(feat[shuffled], weights=act[shuffled].astype(np.float64), minlength=60).tobytes() \
        != want.tobytes()


def batches(seed: int, n_batches: int, d: int, k: int, n_sources: int, zeros: float, levels: int, vocab: int = 500):
    """Random batches as ``shard.compute_shard`` makes them: (ctx, values, indices); chunks of varied padding,
    the first token of each not counted, top-k codes in descending order with some zeros (fewer than k firing);
    ``levels`` > 0 rounds the activations to that many values per decade (ties, broken by document, position);
    a small ``vocab`` repeats windows of text (what ``distinct_contexts`` keeps once)."""
    rng = np.random.default_rng(seed)
    doc = 0
    for _ in range(n_batches):
        n_rows, width = int(rng.integers(1, 6)), int(rng.integers(3, 40))
        pad = rng.integers(0, width - 1, n_rows)
        counted = np.arange(width)[None, :] > pad[:, None]  # the first real token skipped
        tok_row, tok_col = np.nonzero(counted)
        input_ids = rng.integers(0, vocab, (n_rows, width))
        docs = doc + np.arange(n_rows)
        doc += n_rows
        tok_doc, tok_pos = docs[tok_row], (tok_col - pad[tok_row] + rng.integers(0, 3)).astype(np.int32)
        src = rng.integers(0, n_sources, n_rows)
        ctx = {"tok_row": tok_row, "tok_col": tok_col, "pad": pad, "input_ids": input_ids,
               "n_sources": n_sources, "tok_doc": tok_doc, "tok_pos": tok_pos,
               "tok_src": src[tok_row].astype(np.int16), "tok_key": position_key(tok_doc, tok_pos),
               "tok_window": token_windows(input_ids, pad, tok_row, tok_col, 3)}
        n = len(tok_row)
        hot = rng.random(d) ** 3  # a few features fire most
        indices = np.stack([rng.choice(d, k, replace=False, p=hot / hot.sum()) for _ in range(n)]).reshape(n, k)
        values = (10.0 ** rng.normal(0, 0.7, (n, k))).astype(np.float32)
        if levels:
            values = (10.0 ** (np.round(np.log10(values) * levels) / levels)).astype(np.float32)
        values[rng.random((n, k)) < zeros] = 0
        values = -np.sort(-values, axis=1)
        yield ctx, values, indices


def state(part: LayerPartial) -> dict:
    part.flush()
    out = {name: getattr(part, name).copy() for name in ("count", "total", "peak", "hist", "by_source",
                                                        "top_thr", "sample_thr")}
    window, values = part.windows()
    out.update(window=window.copy(), values=values.copy(), **{f"row.{k}": v.copy() for k, v in part.rows.items()})
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), name


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_top=st.integers(1, 6), per_bin=st.integers(1, 3),
       n_bins=st.sampled_from([4, 16, 64]), bpd=st.sampled_from([2, 8]), window=st.integers(0, 3),
       zeros=st.sampled_from([0.0, 0.3]), levels=st.sampled_from([0, 3]),
       pending=st.sampled_from([None, 1, 4000]), distinct=st.booleans())
def test_device_filter_equals_reference(seed, n_top, per_bin, n_bins, bpd, window, zeros, levels,
                                        pending, distinct):
    """Thresholds low (first batches: the batch's own bars) and high (later batches: few candidates), flushes
    every batch or rarely, distinct contexts or not: the filtered path's state equals the reference's, byte for
    byte."""
    params = build_params({"n_top": n_top, "samples_per_bin": per_bin, "n_bins": n_bins, "bins_per_decade": bpd,
                           "min_exponent": -2, "window": window, "seed": seed % 1000,
                           "distinct_contexts": distinct})
    d, k, n_sources = 37, 5, 3
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(device, "AS_IF_REMOTE", True)
        filtered, reference = (LayerPartial(d, params, pending_bytes=pending) for _ in range(2))
        candidates = firings = 0
        for ctx, values, indices in batches(seed, 6, d, k, n_sources, zeros, levels, vocab=4 if distinct else 500):
            ctx = {**ctx, "tok_window": token_windows(ctx["input_ids"], ctx["pad"], ctx["tok_row"],
                                                      ctx["tok_col"], window)}
            seen = []
            mp.setattr(device, "to_host", lambda t, seen=seen: seen.append(t.numel()) or t.cpu().numpy())
            filtered.update(dict(ctx), torch.from_numpy(values), torch.from_numpy(indices))
            reference.update_host(dict(ctx), values, indices)
            candidates, firings = candidates + (seen[0] if seen else 0), firings + int((values > 0).sum())
        assert_same(state(filtered), state(reference))
        assert candidates <= firings
        assert filtered.count.sum() == firings and filtered.rows["feature"].size > 0


def _every_firing(stream, window):
    """Every firing of the batches as rows (feature, activation, document, position, the window's ids)."""
    rows = []
    for ctx, values, indices in stream:
        windows = token_windows(ctx["input_ids"], ctx["pad"], ctx["tok_row"], ctx["tok_col"], window)
        for t, j in zip(*np.nonzero(values > 0)):
            rows.append((int(indices[t, j]), float(values[t, j]), int(ctx["tok_doc"][t]), int(ctx["tok_pos"][t]),
                         tuple(i for i in windows[t].tolist() if i >= 0)))  # the text: padding shows nothing
    return rows


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_top=st.integers(1, 5), window=st.integers(0, 2),
       vocab=st.sampled_from([2, 5, 500]), levels=st.sampled_from([0, 2]), pending=st.sampled_from([None, 1, 4000]),
       remote=st.booleans())
def test_distinct_top_contexts_are_the_strongest_firing_of_each_window(seed, n_top, window, vocab, levels, pending,
                                                                       remote):
    """distinct_contexts: a feature's top rows are, in order, the strongest firing (activation, then document,
    then position) of each distinct window of token ids (padding left out: it shows nothing), the first n_top of
    them, whatever the flushes and on either path; a window never shows twice, and with the option off repeats
    come back (the test can fail)."""
    d, k = 11, 3
    params = build_params({"n_top": n_top, "samples_per_bin": 1, "n_bins": 8, "bins_per_decade": 2,
                           "min_exponent": -2, "window": window, "seed": seed % 1000})
    assert params["distinct_contexts"] is True  # the default
    stream = list(batches(seed, 5, d, k, 2, 0.2, levels, vocab))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(device, "AS_IF_REMOTE", remote)
        part = LayerPartial(d, params, pending_bytes=pending)
        every = LayerPartial(d, {**params, "distinct_contexts": False})
        for ctx, values, indices in stream:
            ctx = {**ctx, "tok_window": token_windows(ctx["input_ids"], ctx["pad"], ctx["tok_row"], ctx["tok_col"],
                                                      window)}
            part.update(dict(ctx), torch.from_numpy(values), torch.from_numpy(indices))
            every.update(dict(ctx), torch.from_numpy(values), torch.from_numpy(indices))
    part.flush()
    every.flush()
    firings = _every_firing(stream, window)
    repeats = 0
    for feature in range(d):
        mine = sorted((r for r in firings if r[0] == feature), key=lambda r: (-np.float32(r[1]), r[2], r[3]))
        seen, want = set(), []
        for r in mine:
            if r[4] not in seen:
                seen.add(r[4])
                want.append((r[2], r[3]))
        top = (part.rows["feature"] == feature) & (part.rows["kind"] == 0)
        got = list(zip(part.rows["document"][top].tolist(), part.rows["position"][top].tolist()))
        assert got == want[:n_top], feature
        shown = [tuple(i for i in w if i >= 0) for w in part.windows()[0][top].tolist()]
        assert len(set(shown)) == len(shown)
        plain = (every.rows["feature"] == feature) & (every.rows["kind"] == 0)
        assert list(zip(every.rows["document"][plain].tolist(), every.rows["position"][plain].tolist())) == \
            [(r[2], r[3]) for r in mine[:n_top]]
        repeats += len(mine[:n_top]) - len({r[4] for r in mine[:n_top]})
    if vocab == 2 and window == 0 and n_top >= 3:
        assert repeats > 0  # two token ids: the plain top rows do repeat, so the distinct ones are a real choice


def test_few_candidates_cross_once_thresholds_rise():
    """On a long stream the thresholds rise and the candidates copied per batch fall far below the firings."""
    params = build_params({"n_top": 2, "samples_per_bin": 1, "n_bins": 8, "bins_per_decade": 2,
                           "min_exponent": -2, "window": 2})
    part, reference = LayerPartial(8, params), LayerPartial(8, params)
    late = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(device, "AS_IF_REMOTE", True)
        mp.setattr(LayerPartial, "NEAR_CHUNK", 40)  # the windows' firings found a few proposed rows at a time
        for b, (ctx, values, indices) in enumerate(batches(5, 40, 8, 2, 1, 0.0, 0)):
            ctx = {**ctx, "tok_window": token_windows(ctx["input_ids"], ctx["pad"], ctx["tok_row"],
                                                      ctx["tok_col"], 2)}
            seen = []
            mp.setattr(device, "to_host", lambda t, seen=seen: seen.append(t.numel()) or t.cpu().numpy())
            part.update(dict(ctx), torch.from_numpy(values), torch.from_numpy(indices))
            reference.update_host(dict(ctx), values, indices)
            if b >= 30:
                late.append((seen[0], values.size))
    assert_same(state(part), state(reference))
    copied, total = map(sum, zip(*late))
    assert copied < total / 5, (copied, total)


def test_a_real_build_writes_the_reference_files(tmp_path, monkeypatch):
    """The embedded default, a few documents: the index built through the device filter is the one the numpy
    reference builds, file for file."""
    from qscope_lab import FeatureIndex, Lab
    from qscope_lab.embedded import reference_documents

    lab = Lab.load(index=False)
    docs = [{"text": r["text"][:300], "source": r["source"]} for r in reference_documents()[:24]]
    options = {"n_top": 4, "context_length": 64, "batch_size": 4, "window": 3, "shard_documents": 12}

    def files(path):
        root = path / "state"
        out = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
               if p.is_file() and p.name != "partial.json"}
        assert sum(name.endswith("contexts.arrow") for name in out) == 2
        return out

    FeatureIndex.build(lab, docs, [1, 3], tmp_path / "reference", **options)  # the CPU: numpy, every firing
    copied = []
    monkeypatch.setattr(device, "AS_IF_REMOTE", True)
    monkeypatch.setattr(device, "to_host", lambda t: copied.append(t.numel()) or t.cpu().numpy())
    FeatureIndex.build(lab, docs, [1, 3], tmp_path / "device", **options)
    assert copied
    assert files(tmp_path / "device") == files(tmp_path / "reference")
