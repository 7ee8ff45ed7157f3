"""Steering recipes (issue 27 item 3): a versioned JSON + Markdown card that round-trips, steers ``lab.generate``
like the steers it holds, and is refused by a Lab of another model or SAE suite, naming both."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qscope_lab import embedded
from qscope_lab.core.steering import Steer
from qscope_lab.lab import Lab
from qscope_lab.steering.recipe import FORMAT, VERSION, Recipe

PROMPTS = ["The weather today is", "Once upon a time", "My favourite food is", "The book was"]


@pytest.fixture(scope="module")
def elab() -> Lab:
    return Lab.load()


@pytest.fixture(scope="module")
def recipe(elab):
    docs = embedded.reference_documents()
    zh = [d["text"][:200] for d in docs if d["lang"] == "zh"][:12]
    en = [d["text"][:200] for d in docs if d["lang"] == "en"][:12]
    layer, feature = embedded.known_features()["chinese"]
    bench = elab.bench_steer({feature: 32.0}, PROMPTS, (zh, en), layer=layer, max_new_tokens=12, n_boot=200)
    return Recipe.create(elab, [Steer(layer, feature, 32.0)], name="write-chinese", bench=bench,
                         settings={"seed": 0})


def test_round_trip_keeps_everything(recipe, tmp_path):
    path = recipe.save(tmp_path / "write-chinese")
    assert path.suffix == ".json" and path.with_suffix(".md").is_file()
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["format"] == FORMAT and data["version"] == VERSION
    for key in ("model", "sae_suite", "sae_fingerprints", "layers", "features", "alphas", "mode", "positions",
                "bench", "examples", "status"):
        assert key in data, key
    assert data["model"] == embedded.NAME and data["sae_suite"] == embedded.SAE_NAME
    assert data["layers"] == [2] and data["alphas"] == [32.0] and data["mode"] == ["add"]
    loaded = Recipe.load(path)
    assert loaded.to_dict() == recipe.to_dict()
    assert loaded.status == recipe.bench.verdict and loaded.bench.verdict == recipe.bench.verdict
    assert loaded.bench.to_frame()["condition"].tolist() == recipe.bench.to_frame()["condition"].tolist()
    assert loaded.steers() == recipe.steers()
    card = path.with_suffix(".md").read_text(encoding="utf-8")
    assert f"Status: **{recipe.status}**" in card and "| zero strength |" in card and "## Gates" in card
    assert card.count("\n|") > 10 and recipe.examples and "unsteered" in recipe.examples[0]


def test_generate_with_a_recipe_is_generate_with_its_steers(elab, recipe):
    layer, feature = embedded.known_features()["chinese"]
    by_recipe = elab.generate(PROMPTS[:2], steer=recipe, max_new_tokens=10)
    by_hand = elab.generate(PROMPTS[:2], layer=layer, steer={feature: 32.0}, max_new_tokens=10)
    assert by_recipe.steered == by_hand.steered and by_recipe.steered != by_recipe.baseline
    bench = elab.bench_steer(recipe, PROMPTS[:2], lambda t: [0.0] * len(t), instruction="中文", max_new_tokens=4,
                             n_boot=100)
    assert bench.steers == recipe.bench.steers


def test_a_recipe_for_another_model_or_suite_is_refused_naming_both(elab, lab, recipe, tmp_path):
    """``lab`` (conftest): a tiny random Qwen3 with random SAEs, another model and suite."""
    with pytest.raises(ValueError, match=f"made for model '{embedded.NAME}'.*this Lab is model '{lab.name}'"):
        lab.generate("The weather", steer=recipe, max_new_tokens=2)
    data = recipe.to_dict()
    data["sae_suite"] = "Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50"
    other = Recipe.from_dict(data)
    with pytest.raises(ValueError, match="SAE-Res-Qwen3-1.7B.*qscope-embedded/saes"):
        elab.generate("The weather", steer=other, max_new_tokens=2)
    data = recipe.to_dict()
    data["sae_fingerprints"] = {"2": "0" * 16}
    with pytest.raises(ValueError, match="layer 2 .* other weights"):
        Recipe.from_dict(data).steers(elab)


def test_bad_recipe_files_are_refused_naming_the_file(recipe, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json is not a JSON recipe"):
        Recipe.load(bad)
    with pytest.raises(FileNotFoundError, match="no recipe file"):
        Recipe.load(tmp_path / "missing.json")
    for change, message in (({"format": "x"}, "not a qscope-lab steering recipe"),
                            ({"version": VERSION + 1}, "reads versions"),
                            ({"steers": []}, "non-empty list"),
                            ({"steers": [{"layer": 2}]}, "malformed"),
                            ({"status": "great"}, "status must be one of")):
        data = {**recipe.to_dict(), **change}
        bad.write_text(json.dumps(data), encoding="utf-8")
        with pytest.raises(ValueError, match=message):
            Recipe.load(bad)
    with pytest.raises(IsADirectoryError):
        recipe.save(tmp_path)


@settings(max_examples=60, deadline=None)
@given(data=st.dictionaries(st.sampled_from(["format", "version", "name", "model", "sae_suite", "steers", "status",
                                             "bench", "positions"]),
                            st.one_of(st.none(), st.integers(), st.text(max_size=5),
                                      st.lists(st.dictionaries(st.text(max_size=3), st.integers()), max_size=2))))
def test_any_malformed_record_is_a_clear_error(data):
    data.setdefault("format", FORMAT)
    try:
        Recipe.from_dict(data, source="x.json")
    except (ValueError, TypeError) as err:
        assert str(err)
