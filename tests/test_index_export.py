"""Neuronpedia export of the shipped embedded index: importable by Neuronpedia's importer (every record checked
against its published schema, the first-line rule of its bulk files), confined to its folder, never silently
overwriting someone else's files, no stale batch files after a re-export, every file replaced atomically."""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qscope_lab import FeatureIndex, Lab
from qscope_lab.index.export import DEFAULT_CREATOR_ID, check_id, check_source_set, source_folder

# Neuronpedia's schema, from hijohnnylin/neuronpedia at ebb8426fc550ad5d1f76d52c271a624af3c08a57:
#   apps/webapp/prisma/schema.prisma (models Model, SourceRelease, SourceSet, Source, Neuron, Activation),
#   apps/webapp/prisma/migrations/000000000000_squashed_migrations/migration.sql (NOT NULL / defaults of the
#   tables the bulk files are inserted into) and migrations/20260406230017_add_zvalues (Activation.z*),
#   apps/webapp/app/api/admin/import/route.ts (file layout, order, .jsonl.gz filter, Prisma create of metadata),
#   apps/webapp/lib/db/import.ts (importJsonlString: the FIRST line's keys are a bulk file's columns),
#   apps/webapp/prisma/seed.ts (the seeded bot user clkht01d40000jv08hvalcvly).
# Types: "str", "int", "num" (Float), "bool", "date" (ISO-8601 string), "vis" (enum Visibility), "[str]", "[num]",
# "[int]", "json". REQUIRED: NOT NULL without a default (must be on every line, non-null); OPTIONAL: every other
# column (a nullable one may be null; a defaulted NOT NULL one, if given, must not be null).
VISIBILITY = ("PUBLIC", "UNLISTED", "PRIVATE")
SCHEMA = {
    "model.jsonl": {
        "required": {"id": "str", "creatorId": "str", "layers": "int", "neuronsPerLayer": "int", "owner": "str"},
        "not_null": {"displayNameShort": "str", "displayName": "str", "thinking": "bool", "visibility": "vis",
                     "inferenceEnabled": "bool", "instruct": "bool", "createdAt": "date", "updatedAt": "date"},
        # defaultSourceSetName / defaultSourceId / defaultGraphSourceSetName are foreign keys to rows imported
        # after the model: they must be absent (or null), so they are not allowed here
        "nullable": {"tlensId": "str", "openRouterId": "str", "dimension": "int", "website": "str"},
    },
    "release.jsonl": {
        "required": {"name": "str", "description": "str", "creatorName": "str", "creatorId": "str"},
        "not_null": {"visibility": "vis", "isNewUi": "bool", "featured": "bool", "defaultUmapSourceIds": "[str]",
                     "createdAt": "date"},
        "nullable": {"descriptionShort": "str", "creatorEmail": "str", "creatorNameShort": "str",
                     "defaultSourceSetName": "str", "defaultSourceId": "str", "urls": "[str]"},
    },
    "sourceset.jsonl": {
        "required": {"modelId": "str", "name": "str", "description": "str", "creatorName": "str",
                     "creatorId": "str"},
        "not_null": {"hasDashboards": "bool", "allowInferenceSearch": "bool", "visibility": "vis", "type": "str",
                     "hasGraphs": "bool", "graphEnabled": "bool", "similarityMatrixEnabled": "bool",
                     "defaultRange": "int", "defaultShowBreaks": "bool", "showDfa": "bool", "showCorrelated": "bool",
                     "showHeadAttribution": "bool", "showUmap": "bool", "createdAt": "date", "urls": "[str]"},
        "nullable": {"creatorEmail": "str", "releaseName": "str", "defaultOfModelId": "str",
                     "defaultGraphModelId": "str"},
    },
    "source.jsonl": {
        "required": {"id": "str", "modelId": "str", "setName": "str", "creatorId": "str"},
        "not_null": {"hasDashboards": "bool", "inferenceEnabled": "bool", "visibility": "vis", "hasUmap": "bool",
                     "hasUmapLogSparsity": "bool", "hasUmapClusters": "bool", "createdAt": "date",
                     "saelensConfig": "json"},  # Prisma 5 refuses a JS null for a Json? field in create
        "nullable": {"saelensRelease": "str", "saelensSaeId": "str", "hfRepoId": "str", "hfFolderId": "str",
                     "defaultOfModelId": "str", "num_prompts": "int", "num_tokens_in_prompt": "int",
                     "dataset": "str", "notes": "str", "cosSimMatchModelId": "str", "cosSimMatchSourceId": "str"},
    },
    "features": {  # table Neuron
        "required": {"modelId": "str", "layer": "str", "index": "str"},
        "not_null": {"createdAt": "date", "hasVector": "bool", "frac_nonzero": "num"},
        "nullable": {"sourceSetName": "str", "creatorId": "str", "maxActApprox": "num", "vectorLabel": "str",
                     "vectorDefaultSteerStrength": "num", "hookName": "str", "umap_cluster": "int",
                     "umap_log_feature_sparsity": "num", "umap_x": "num", "umap_y": "num",
                     "vector": "[num]", "topkCosSimIndices": "[int]", "topkCosSimValues": "[num]",
                     "neuron_alignment_indices": "[int]", "neuron_alignment_values": "[num]",
                     "neuron_alignment_l1": "[num]", "correlated_neurons_indices": "[int]",
                     "correlated_neurons_pearson": "[num]", "correlated_neurons_l1": "[num]",
                     "correlated_features_indices": "[int]", "correlated_features_pearson": "[num]",
                     "correlated_features_l1": "[num]", "neg_str": "[str]", "neg_values": "[num]",
                     "pos_str": "[str]", "pos_values": "[num]", "freq_hist_data_bar_heights": "[num]",
                     "freq_hist_data_bar_values": "[num]", "logits_hist_data_bar_heights": "[num]",
                     "logits_hist_data_bar_values": "[num]", "decoder_weights_dist": "[num]"},
    },
    "activations": {  # table Activation; id has no database default (cuid() is Prisma-side only)
        "required": {"id": "str", "modelId": "str", "layer": "str", "index": "str", "creatorId": "str",
                     "maxValue": "num", "maxValueTokenIndex": "int", "minValue": "num"},
        "not_null": {"dfaValues": "[num]", "lossValues": "[num]", "zQIndices": "[int]", "zKIndices": "[int]",
                     "zValues": "[num]", "createdAt": "date"},
        "nullable": {"tokens": "[str]", "values": "[num]", "dfaTargetIndex": "int", "dfaMaxValue": "num",
                     "logitContributions": "str", "binMin": "num", "binMax": "num", "binContains": "num",
                     "qualifyingTokenIndex": "int", "dataIndex": "str", "dataSource": "str"},
    },
}


def type_ok(value, kind: str) -> bool:
    number = (int, float)
    checks = {
        "str": lambda v: isinstance(v, str), "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "num": lambda v: isinstance(v, number) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool), "vis": lambda v: v in VISIBILITY,
        "date": lambda v: isinstance(v, str) and re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", v) is not None,
        "json": lambda v: isinstance(v, dict),
    }
    if kind.startswith("["):
        inner = kind[1:-1]
        return isinstance(value, list) and all(type_ok(v, inner) for v in value)
    return checks[kind](value)


def check_record(record: dict, kind: str, where: str) -> None:
    spec = SCHEMA[kind]
    columns = {**spec["required"], **spec["not_null"], **spec["nullable"]}
    unknown = set(record) - set(columns)
    assert not unknown, f"{where}: keys {sorted(unknown)} are not columns of Neuronpedia's {kind}"
    for name in spec["required"]:
        assert name in record and record[name] is not None, f"{where}: required {name} missing or null"
    for name, value in record.items():
        if value is None:
            assert name in spec["nullable"], f"{where}: {name} is null but NOT NULL in Neuronpedia"
        else:
            assert type_ok(value, columns[name]), f"{where}: {name}={value!r} is not a {columns[name]}"


def read_lines(path: Path) -> list[dict]:
    raw = path.read_bytes()
    assert raw[:2] == b"\x1f\x8b", f"{path} is not gzipped"
    return [json.loads(line) for line in gzip.decompress(raw).decode("utf-8").splitlines() if line]


@pytest.fixture(scope="module")
def index() -> FeatureIndex:
    return Lab.load().index


@pytest.fixture(scope="module")
def exported(index, tmp_path_factory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("np")
    return out, index.export_neuronpedia(out)


def test_every_record_follows_neuronpedia_schema_and_first_line_rule(index, exported):
    out, folders = exported
    assert [f.relative_to(out).as_posix() for f in folders] == [f"qscope-embedded/{x}-qscope-res"
                                                              for x in index.layers]
    for layer, folder in zip(index.layers, folders):
        source_id = f"{layer}-qscope-res"
        assert {p.name for p in folder.iterdir()} == {"model.jsonl", "sourceset.jsonl", "source.jsonl",
                                                       "release.jsonl", "features", "activations"}
        meta = {}
        for name in ("model.jsonl", "sourceset.jsonl", "source.jsonl", "release.jsonl"):
            lines = folder.joinpath(name).read_text(encoding="utf-8").splitlines()
            assert len(lines) == 1, f"{name}: one record"
            meta[name] = json.loads(lines[0])
            check_record(meta[name], name, f"{folder.name}/{name}")
        model, sset, source, release = (meta[n] for n in ("model.jsonl", "sourceset.jsonl", "source.jsonl",
                                                          "release.jsonl"))
        assert model["layers"] == len(index.layers) and model["owner"]
        assert source["id"] == source_id and source["modelId"] == model["id"] == sset["modelId"]
        assert source["setName"] == sset["name"] == "qscope-res" and sset["releaseName"] == release["name"]
        creators = {model["creatorId"], sset["creatorId"], source["creatorId"], release["creatorId"]}
        assert creators == {DEFAULT_CREATOR_ID}

        rows: dict[str, list[dict]] = {}
        for sub in ("features", "activations"):
            files = sorted(folder.joinpath(sub).iterdir(), key=lambda p: int(p.name.split("-")[1].split(".")[0]))
            assert [p.name for p in files] == [f"batch-{i}.jsonl.gz" for i in range(len(files))]
            rows[sub] = []
            for path in files:
                lines = read_lines(path)
                assert lines, f"{path} is empty"
                first = set(lines[0])
                for i, line in enumerate(lines):  # the importer's columns are the first line's keys
                    assert set(line) == first, f"{path} line {i}: keys differ from the first line's"
                    check_record(line, sub, f"{path.name} line {i}")
                rows[sub].extend(lines)
        stats = index.stats(layer)
        features = {r["index"]: r for r in rows["features"]}
        assert len(features) == len(rows["features"]) == int((stats.firing_count > 0).sum())
        assert all(r["layer"] == source_id and r["modelId"] == model["id"] for r in rows["features"])
        acts = rows["activations"]
        assert len({a["id"] for a in acts}) == len(acts)
        assert all(re.fullmatch(r"c[0-9a-z]{24}", a["id"]) for a in acts)
        for a in acts:
            assert a["index"] in features and a["layer"] == source_id and a["creatorId"] == DEFAULT_CREATOR_ID
            assert len(a["tokens"]) == len(a["values"]) and a["maxValue"] == max(a["values"])
            assert a["values"][a["maxValueTokenIndex"]] == a["maxValue"] and a["minValue"] == min(a["values"])
            if a["binMin"] == -1:  # Neuronpedia's "Top Activations" group
                assert a["binMax"] == -1 and a["binContains"] == -1
            else:
                assert 0 <= a["binMin"] <= a["binMax"] and 0 < a["binContains"] <= 1
        f = int(rows["features"][0]["index"])
        top = [a for a in acts if a["index"] == str(f) and a["binMin"] == -1]
        assert len(top) == len(index.top_contexts(layer, f))
        assert top[0]["maxValue"] == pytest.approx(index.top_contexts(layer, f).activation.iloc[0])


SAFE = st.text(alphabet="abcXYZ019._-", min_size=1, max_size=20)
ANY = st.text(min_size=0, max_size=24)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(model_id=st.one_of(SAFE, ANY), source_set=st.one_of(SAFE, ANY))
def test_ids_that_pass_validation_stay_inside_the_folder(tmp_path, model_id, source_set):
    try:
        check_id(model_id, "model_id")
        check_source_set(source_set)
    except ValueError as err:
        assert "model_id" in str(err) or "source_set" in str(err)
        return
    folder = source_folder(tmp_path, model_id, f"3-{source_set}")
    real, root = os.path.realpath(folder), os.path.realpath(tmp_path)
    assert os.path.commonpath([real, root]) == root and real != root
    assert Path(real).relative_to(root).parts == (model_id, f"3-{source_set}")


@pytest.mark.parametrize(("option", "value"), [("model_id", "../victim"), ("model_id", "/tmp/abs-victim"),
                                               ("source_set", "x/../../../victim2"), ("model_id", ".."),
                                               ("source_set", "a__b"), ("creator_id", "x/y"), ("release", "")])
def test_export_refuses_an_unsafe_id_naming_it(index, tmp_path, option, value):
    out = tmp_path / "out" / "deep"
    out.mkdir(parents=True)
    with pytest.raises(ValueError, match=option):
        index.export_neuronpedia(out, layers=[2], **{option: value})
    assert set(tmp_path.rglob("*")) == {tmp_path / "out", out}  # nothing written anywhere


def test_export_refuses_a_link_that_leads_outside(index, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "qscope-embedded").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="outside"):
        index.export_neuronpedia(tmp_path / "out", layers=[2])
    assert not any((tmp_path / "elsewhere").iterdir())


def test_reexport_replaces_atomically_and_leaves_no_stale_batches(index, tmp_path):
    out = tmp_path / "np"
    (folder,) = index.export_neuronpedia(out, layers=[2], features_per_file=64)
    assert len(list((folder / "features").iterdir())) > 2
    old_model = folder / "model.jsonl"
    os.link(old_model, tmp_path / "model-before.jsonl")  # a write in place would change this link's content too
    before = (tmp_path / "model-before.jsonl").read_bytes()
    (folder,) = index.export_neuronpedia(out, layers=[2], features_per_file=1024)  # same source: no overwrite
    assert (tmp_path / "model-before.jsonl").read_bytes() == before
    assert os.stat(folder / "model.jsonl").st_ino != os.stat(tmp_path / "model-before.jsonl").st_ino
    features = [r for p in (folder / "features").iterdir() for r in read_lines(p)]
    assert sorted(p.name for p in (folder / "features").iterdir()) == ["batch-0.jsonl.gz", "batch-1.jsonl.gz"]
    assert sorted(p.name for p in (folder / "activations").iterdir()) == ["batch-0.jsonl.gz", "batch-1.jsonl.gz"]
    assert len(features) == len({r["index"] for r in features}) == int((index.stats(2).firing_count > 0).sum())
    assert not [p for p in folder.rglob("*") if p.name.startswith(".tmp-")]


def test_export_refuses_a_foreign_folder_unless_overwrite(index, tmp_path):
    out = tmp_path / "np"
    folder = out / "qscope-embedded" / "2-qscope-res"
    (folder / "features").mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    (folder / "features" / "batch-99.jsonl.gz").write_bytes(gzip.compress(b'{"index": "x"}\n'))
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    (folder / "model.jsonl").symlink_to(outside)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        index.export_neuronpedia(out, layers=[2])
    assert (folder / "features" / "batch-99.jsonl.gz").exists()
    index.export_neuronpedia(out, layers=[2], overwrite=True)
    assert (folder / "notes.txt").read_text() == "mine"  # files of other names are kept
    assert not (folder / "features" / "batch-99.jsonl.gz").exists()  # stale batch files removed
    assert outside.read_text() == "keep me" and not (folder / "model.jsonl").is_symlink()
    # an earlier export of another source in the same folder is not "the same thing"
    other = out / "qscope-embedded" / "1-qscope-res"
    index.export_neuronpedia(out, layers=[1])
    (other / "source.jsonl").write_text(json.dumps({"id": "1-qscope-res", "modelId": "someone-else"}) + "\n")
    with pytest.raises(FileExistsError):
        index.export_neuronpedia(out, layers=[1])


def test_cli_export_refuses_unsafe_ids_and_foreign_folders_in_one_line(index, tmp_path, capsys):
    from qscope_lab.cli.main import main

    assert main(["index", "export", str(index.path), "--out", str(tmp_path), "--model-id", "../victim"]) == 2
    err = capsys.readouterr().err
    assert "model_id" in err and len(err.strip().splitlines()) == 1 and not (tmp_path.parent / "victim").exists()
    (tmp_path / "qscope-embedded" / "2-qscope-res").mkdir(parents=True)
    (tmp_path / "qscope-embedded" / "2-qscope-res" / "x.txt").write_text("x")
    assert main(["index", "export", str(index.path), "--out", str(tmp_path), "--layers", "2"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["index", "export", str(index.path), "--out", str(tmp_path), "--layers", "2", "--overwrite",
                 "--creator-id", DEFAULT_CREATOR_ID]) == 0
