"""Issue 13 on the embedded default: whole characters in every token view, informative default rankings, the
offline chart renderer, and the CLI's defaults (middle layer, no progress bars)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from qscope_lab import Lab
from qscope_lab.analysis.features import logit_table, top_contexts
from qscope_lab.core import tokens

SPLIT = "猫坐在垫子上。"  # 猫 and 垫 are two byte tokens each in the embedded 6k vocabulary


@pytest.fixture(scope="module")
def emb() -> Lab:
    return Lab.load()


def test_groups_join_split_characters_and_keep_alignment(emb):
    ids = emb.token_ids([SPLIT])[0]
    raw = emb.token_strings(ids)
    pieces, starts = tokens.groups(emb, ids)
    assert len(pieces) == len(ids) == len(starts)
    assert "".join(pieces) == SPLIT and raw.count("\ufffd") == 4
    assert [tokens.whole(pieces, starts, i) for i in range(len(ids))][:2] == ["猫", "猫"]
    assert tokens.hover(pieces, starts, 1) == "byte token 2 of 2 of 猫" and tokens.hover(pieces, starts, 2) == ""
    assert tokens.raw_label(emb, ids[0]) == "⟨e7 8c⟩" and tokens.raw_label(emb, ids[2]) == "坐"


def test_top_contexts_show_whole_characters(emb):
    acts = emb.encode([SPLIT, "The cat sat on the mat."], layer=2)
    feature = int(acts.indices[1, 0])  # the strongest feature of the second byte token of 猫
    plain = top_contexts(acts, feature, n=50)
    whole = top_contexts(acts, feature, n=50, lab=emb)
    assert "\ufffd" in "".join(plain.context) and "\ufffd" not in "".join(whole.context)
    row = whole[(whole.text == 0) & (whole.position == 1)].iloc[0]
    assert row.token == "猫" and row.context.startswith("[[猫]]") and row.boundary == "byte token 2 of 2 of 猫"
    assert "\ufffd" not in "".join(logit_table(emb, 2, feature, n=20).token)


def test_next_tokens_never_show_replacement_characters(emb):
    table = emb.next_tokens("今天的天气", layer=2, steer={}, top=20)
    shown = list(table.baseline_token) + list(table.steered_token)
    assert not any("\ufffd" in t for t in shown)


def test_default_rankings_leave_always_on_features_out(emb):
    acts = emb.encode(["The cat sat on the mat.", "猫坐在垫子上。", "def add(a, b):\n    return a + b"], layer=2,
                      skip_first=True)
    rates = acts.firing_rates()
    assert acts.top_features(10).equals(acts.top_features(10, max_firing_rate=0.5))  # the default
    assert all(rates[f] <= 0.3 for f in acts.top_features(10, max_firing_rate=0.3).feature)
    assert any(rates[f] > 0.3 for f in acts.top_features(10, max_firing_rate=None).feature)
    frame = acts.to_frame(max_firing_rate=0.5, top=1)
    assert frame.groupby(["text", "position"]).size().max() == 1 and frame["rank"].eq(0).all()
    assert frame.head(12).token.nunique() >= 6  # the first rows are many tokens, not one token's k features
    assert set(frame.snippet) == {"The cat sat on the mat.", "猫坐在垫子上。", "def add(a, b): return a + b"}
    with pytest.raises(ValueError, match="top must be at least 1"):
        acts.to_frame(top=0)


def test_heatmap_hover_ranks_broad_features_down(emb):
    from qscope_lab.widgets import Heatmap

    hm = Heatmap(emb, ["The 3 cats sat on the mat in 1999.", "今天的天气很好，我们去公园散步。"], layer=2)
    rates = hm.acts.firing_rates()
    for position in range(1, 8):
        listed = hm.token_hover(0, position)
        assert listed and all(rates[f] <= 0.5 for f, _ in listed)
    assert "".join(hm.tokens[1]) == "今天的天气很好，我们去公园散步。"
    assert len(hm.token_notes[1]) == len(hm.tokens[1])


def test_charts_render_offline_with_the_theme():
    script = ("import sys, qscope_lab; assert 'altair' not in sys.modules\n"
              "from qscope_lab.viz import charts\nimport altair as alt\n"
              "assert alt.renderers.active == 'svg' and alt.theme.active == 'qscope'\n"
              "bundle = charts.layer_delta_chart(__import__('pandas').DataFrame({'layer': [0, 1], 'delta': [.1, .5]}))"
              "._repr_mimebundle_()\nbundle = bundle[0] if isinstance(bundle, tuple) else bundle\n"
              "assert list(bundle) == ['image/svg+xml'] and '<svg' in bundle['image/svg+xml']\n"
              "assert '#ff6600' in bundle['image/svg+xml']\nprint('ok')")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_cli_info_and_saes_defaults():
    env_script = ("import sys\nfrom qscope_lab.cli.main import main\nmain(['saes'])\n"
                  "assert 'torch' not in sys.modules, 'saes imported torch'\n")
    done = subprocess.run([sys.executable, "-c", env_script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    done = subprocess.run([sys.executable, "-m", "qscope_lab.cli", "info"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr
    assert "Loading weights" not in done.stderr and "None" not in done.stdout
    facts = dict(line.split(None, 1) for line in done.stdout.splitlines()[1:] if line.split()[0] in {"d_sae", "k"})
    assert facts == {"d_sae": "2048", "k": "64"} and "qscope-embedded/saes" in done.stdout
