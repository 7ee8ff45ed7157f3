"""Seed-data classifier (REFERENCE section 2) on the embedded model: Chinese vs English and code vs prose, with
hand-written seeds and distinct held-out texts; the OR rule must clear F1 0.9 and beat random features."""

import json

import altair as alt
import numpy as np
import pandas as pd
import pytest

from qscope_lab import Lab
from qscope_lab.analysis.features import texts_firing
from qscope_lab.workflows.classify import NotFittedError, SeedClassifier, metrics

ZH_SEEDS = ["今天天气很好，我们去公园散步。", "这本书写得非常好，我很喜欢。", "他昨天晚上很晚才回家。",
            "请把门关上，外面太冷了。", "这家饭店的菜很好吃，价格也不贵。", "我们明天早上八点出发。",
            "学习是一件快乐的事情。", "她在北京工作了十年。", "房间很干净，服务也很周到。", "春天来了，花都开了。",
            "我们在湖边拍了很多照片。", "这台电脑运行速度很快。", "爷爷每天晚上看新闻。",
            "商品质量不错，下次还会再来。", "他们正在讨论明年的计划。", "冬天的早晨又冷又黑。"]
EN_SEEDS = [
    "The weather was fine, so we walked along the river until dusk.",
    "She opened the letter slowly and read it twice before saying a word.",
    "A function returns a value to the code that called it.",
    "The library was quiet except for the sound of turning pages.",
    "He promised to call his mother every Sunday evening.",
    "This module provides a way of using operating system dependent functionality.",
    "The children laughed as the dog chased its own tail around the garden.",
    "Never put off until tomorrow what you can do today.",
    "The list is sorted in place, and nothing is returned.",
    "Our train was late, and we missed the beginning of the concert.",
    "The museum opens at nine and closes at five on weekdays.",
    "Each element of the list is compared with the next one.",
    "A wise man listens more than he speaks.",
    "It rained all night, and the roads were covered in mud.",
    "The tuple returned by this method contains two numbers.",
    "We painted the kitchen a pale shade of green.",
]
CODE_SEEDS = [
    "def add(a, b):\n    return a + b", "for i in range(10):\n    print(i)",
    "import os\npath = os.path.join(root, name)", "class Point:\n    def __init__(self, x, y):\n        self.x = x",
    "if not items:\n    raise ValueError('empty')", "with open(filename) as f:\n    data = f.read()",
    "result = [x * 2 for x in values if x > 0]", "try:\n    value = int(text)\nexcept ValueError:\n    value = None",
    "while queue:\n    node = queue.pop(0)", "return {key: len(val) for key, val in groups.items()}",
    "x = np.zeros((3, 4))\ny = x.sum(axis=0)", "def is_even(n):\n    return n % 2 == 0",
    "print(f'{name}: {score:.2f}')", "parser.add_argument('--verbose', action='store_true')",
    "self.assertEqual(a, b)", "yield from walk(child)",
]
ZH_TEST = ["孩子们在花园里玩得很开心。", "这部电影太长了，我看睡着了。", "我想喝一杯热茶。", "火车晚点了半个小时。",
           "老师让我们写一篇作文。", "这个手机用了一个星期就坏了。", "他每天早上跑步。", "山上的风景非常美丽。",
           "我们一起吃晚饭吧。", "这件衣服的颜色我不喜欢。", "明天可能会下雨。", "他的中文说得很流利。",
           "图书馆里很安静。", "快递第二天就到了，很满意。", "我的朋友住在上海。", "这个问题很难回答。",
           "妈妈做的饭最好吃。", "会议改到下周三了。", "路上车很多，我们迟到了。", "书店里有很多新书。"]
EN_TEST = [
    "The old man sat by the window and watched the rain fall.",
    "We spent the whole afternoon looking for a place to eat.",
    "A good friend is worth more than a bag of gold.",
    "The meeting was moved to Thursday because the director was ill.",
    "Birds sang in the trees while the sun rose over the hills.",
    "This function returns the number of items in a container.",
    "The dictionary maps each key to exactly one value.",
    "He forgot his umbrella and came home soaking wet.",
    "My sister moved to a small town near the sea last year.",
    "The book was longer than I expected, but I enjoyed every page.",
    "If the file does not exist, an exception is raised.",
    "There is no place like home after a long journey.",
    "The teacher asked the students to write a short story.",
    "Every morning she drinks a cup of tea and reads the news.",
    "The bridge was built more than two hundred years ago.",
    "Strings are immutable sequences of Unicode code points.",
    "They danced until midnight and then walked home under the stars.",
    "The garden was full of roses, tulips and bright yellow daisies.",
    "Patience is bitter, but its fruit is sweet.",
    "The argument must be an integer or a floating point number.",
    "Nobody knew where the little boat had come from.",
    "The shop on the corner sells fresh bread every morning.",
]
CODE_TEST = [
    "def area(r):\n    return 3.14159 * r * r", "total = 0\nfor n in numbers:\n    total += n",
    "import sys\nprint(sys.argv[1:])", "class Stack:\n    def push(self, item):\n        self.items.append(item)",
    "if x is None:\n    x = []", "names = sorted(set(words), key=str.lower)",
    "except KeyError as exc:\n    log.warning('missing %s', exc)", "while n > 1:\n    n = n // 2",
    "def __repr__(self):\n    return f'Node({self.value!r})'", "lines = [line.strip() for line in f if line]",
    "from collections import defaultdict\ncounts = defaultdict(int)",
    "for key, value in mapping.items():\n    print(key, value)", "assert len(result) == 3, result",
    "self.cache = {}\nself.size = 0", "def main():\n    args = parse_args()\n    run(args)",
    "return sum(x ** 2 for x in xs) / len(xs)", "if __name__ == '__main__':\n    main()",
    "with open(path, 'w') as out:\n    out.write(text)", "data = json.loads(raw)\nitems = data['items']",
    "lambda a, b: a if a > b else b", "try:\n    import numpy as np\nexcept ImportError:\n    np = None",
    "matrix = [[0] * cols for _ in range(rows)]",
]
SEEDS, SEED_LABELS = ZH_SEEDS + EN_SEEDS, [1] * len(ZH_SEEDS) + [0] * len(EN_SEEDS)
TEST, TEST_LABELS = ZH_TEST + EN_TEST, [1] * len(ZH_TEST) + [0] * len(EN_TEST)


def test_seed_and_heldout_sets_are_disjoint():
    assert not set(ZH_SEEDS + EN_SEEDS + CODE_SEEDS) & set(ZH_TEST + EN_TEST + CODE_TEST)


@pytest.fixture(scope="module")
def default_lab():
    return Lab.load()


@pytest.fixture(scope="module")
def compared(default_lab):
    """Chinese (positive) vs English with the report's rule (any feature fires, top-1 delta layer): one fit and
    one held-out comparison shared by the tests below."""
    clf = SeedClassifier(default_lab, statistic="any", top_k=1, select="delta", progress=False)
    table = clf.compare_baselines(SEEDS, SEED_LABELS, TEST, TEST_LABELS, n_random=5)
    return clf, table.set_index("method")


def test_or_rule_clears_f1_090_and_beats_random_features(compared):
    clf, table = compared
    print(table.round(3))  # measured: report rule F1 1.0, random features 0.25, logreg probe 1.0
    assert list(table.index) == ["report_rule", "calibrated_rule", "random_features", "logreg_probe"]
    assert {"accuracy", "precision", "recall", "f1"} <= set(table.columns)
    assert table.f1["report_rule"] >= 0.9
    assert table.f1["report_rule"] > table.f1["random_features"] + 0.3
    assert table.f1["logreg_probe"] >= 0.9
    assert clf.evaluate(TEST, TEST_LABELS)["f1"] == pytest.approx(table.f1["calibrated_rule"])
    assert clf.score(TEST, TEST_LABELS) == pytest.approx(table.accuracy["calibrated_rule"])


def test_fitted_tables_and_chart(compared):
    clf, _ = compared
    assert clf.layer_ in range(4) and clf.features_ == [(clf.layer_, clf.features_[0][1])]
    assert list(clf.deltas_.columns) == ["layer", "feature", "pos_rate", "neg_rate", "delta", "rank"]
    assert sorted(clf.deltas_.layer.unique()) == [0, 1, 2, 3]
    scores = clf.layer_scores_
    assert scores.layer.iloc[0] == clf.layer_ and scores.top1_delta.is_monotonic_decreasing
    top = clf.deltas_[clf.deltas_.layer == clf.layer_].iloc[0]
    assert top.delta == pytest.approx(top.pos_rate - top.neg_rate) and top.delta == scores.top1_delta.max()
    assert isinstance(clf.delta_chart(), alt.Chart) and clf.delta_chart().to_dict()["mark"]["type"] == "bar"


def test_firing_rates_match_lab_encode(default_lab, compared):
    """The batched scan (one forward for all layers) counts what lab.encode + texts_firing count."""
    clf, _ = compared
    layer, feature = clf.features_[0]
    pos = texts_firing(default_lab.encode(ZH_SEEDS, layer, skip_first=True))[feature] / len(ZH_SEEDS)
    neg = texts_firing(default_lab.encode(EN_SEEDS, layer, skip_first=True))[feature] / len(EN_SEEDS)
    row = clf.deltas_[(clf.deltas_.layer == layer) & (clf.deltas_.feature == feature)].iloc[0]
    assert (row.pos_rate, row.neg_rate) == pytest.approx((float(pos), float(neg)))


def test_batch_size_does_not_change_the_fit(default_lab, compared):
    clf, _ = compared
    other = SeedClassifier(default_lab, statistic="any", top_k=1, select="delta", batch_size=7,
                           progress=False).fit(SEEDS, SEED_LABELS)
    assert other.features_ == clf.features_
    pd.testing.assert_frame_equal(other.deltas_, clf.deltas_)


def test_decision_function_agrees_with_predict(compared):
    clf, _ = compared
    texts = TEST[::2]
    scores, pred = clf.decision_function(texts), clf.predict(texts)
    assert scores.shape == pred.shape == (len(texts),) and (scores >= 0).all() and pred.dtype == bool
    np.testing.assert_array_equal(scores > 0, pred)
    np.testing.assert_allclose(clf.transform(texts).max(1), scores)


def test_fit_accepts_a_dataframe(default_lab, compared):
    clf, _ = compared
    frame = pd.DataFrame({"text": SEEDS, "label": [bool(x) for x in SEED_LABELS]})
    again = SeedClassifier(default_lab, statistic="any", top_k=1, select="delta", progress=False).fit(frame)
    assert again.features_ == clf.features_


def test_random_control_draws_seed_firing_features(compared):
    clf, _ = compared
    a, b = clf.random_feature_control(seed=1), clf.random_feature_control(seed=1)
    assert a.features_ == b.features_ and len(a.features_) == len(clf.features_)
    assert all(layer == clf.layer_ and f in clf._candidates_[layer] for layer, f in a.features_)
    assert clf.features_ != a.features_ or clf.features_ != clf.random_feature_control(seed=2).features_


def test_multi_layer_variant_takes_the_best_feature_of_n_distinct_layers(default_lab):
    texts, labels = CODE_SEEDS + EN_SEEDS, [1] * len(CODE_SEEDS) + [0] * len(EN_SEEDS)
    clf = SeedClassifier(default_lab, statistic="any", top_k=1, select="delta", n_layers=2,
                         progress=False).fit(texts, labels)
    layers = [layer for layer, _ in clf.features_]
    assert len(set(layers)) == 2 and layers == clf.layers_ == list(clf.layer_scores_.layer[:2])
    for layer, f in clf.features_:
        assert f == clf.deltas_[clf.deltas_.layer == layer].feature.iloc[0]
    result = clf.evaluate(CODE_TEST + EN_TEST, [1] * len(CODE_TEST) + [0] * len(EN_TEST))
    assert result["f1"] >= 0.8  # measured 0.85 (precision is the weak side of an OR rule)


def test_save_load_round_trip(default_lab, compared, tmp_path):
    clf, _ = compared
    loaded = SeedClassifier.load(clf.save(tmp_path / "clf.json"), default_lab)
    assert loaded.features_ == clf.features_ and loaded.layer_ == clf.layer_
    np.testing.assert_array_equal(loaded.decision_function(TEST), clf.decision_function(TEST))
    pd.testing.assert_frame_equal(loaded.deltas_, clf.deltas_, check_dtype=False)
    with pytest.raises(NotFittedError, match="seed statistics"):  # seed pools are not saved
        loaded.random_feature_control()


def test_load_refuses_another_model_or_a_garbled_file(default_lab, compared, tmp_path):
    clf, _ = compared
    data = json.loads(clf.save(tmp_path / "clf.json").read_text())
    (tmp_path / "other.json").write_text(json.dumps({**data, "model": "Qwen/Qwen3-1.7B"}))
    with pytest.raises(ValueError, match="fitted on model 'Qwen/Qwen3-1.7B'"):
        SeedClassifier.load(tmp_path / "other.json", default_lab)
    for name, text in [("garbled.json", "{not json"), ("wrong.json", '{"a": 1}'), ("list.json", "[1, 2]")]:
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=name):
            SeedClassifier.load(tmp_path / name, default_lab)


def test_errors(default_lab):
    clf = SeedClassifier(default_lab, progress=False)
    with pytest.raises(NotFittedError, match="not fitted"):
        clf.predict(["hello"])
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)
    with pytest.raises(ValueError, match="both classes"):
        clf.fit(EN_SEEDS, [0] * len(EN_SEEDS))
    with pytest.raises(ValueError, match="3 texts but 2 labels"):
        clf.fit(EN_SEEDS[:3], [0, 1])
    with pytest.raises(ValueError, match="no texts"):
        clf.fit([], [])
    with pytest.raises(ValueError, match=r"labels\[0\] is .yes.: labels must be bools, 0/1"):
        clf.fit(EN_SEEDS[:2], ["yes", "no"])
    # scikit-learn's convention: the constructor stores, fit validates (and names the parameter)
    with pytest.raises(ValueError, match="top_k"):
        SeedClassifier(default_lab, top_k=33).fit(EN_SEEDS[:2] + ZH_SEEDS[:2], [0, 0, 1, 1])
    with pytest.raises(ValueError, match="n_layers"):
        SeedClassifier(default_lab, n_layers=5).fit(EN_SEEDS[:2] + ZH_SEEDS[:2], [0, 0, 1, 1])
    with pytest.raises(TypeError, match="top_k"):
        SeedClassifier(default_lab, top_k=1.5).fit(EN_SEEDS[:2] + ZH_SEEDS[:2], [0, 0, 1, 1])


def test_estimator_conventions(default_lab):
    clf = SeedClassifier(default_lab, layers=range(4), top_k=2, progress=False)
    params = clf.get_params()
    assert params["layers"] == range(4) and params["top_k"] == 2 and params["lab"] is default_lab
    assert clf.set_params(top_k=1, layers=[1, 2]) is clf and clf.get_params()["layers"] == [1, 2]
    with pytest.raises(ValueError, match="no parameter"):
        clf.set_params(topk=3)
    assert not [name for name in vars(clf) if name.endswith("_")]  # nothing fitted before fit
    clf.fit(ZH_SEEDS[:6] + EN_SEEDS[:6], [1] * 6 + [0] * 6)
    fitted = {name for name in vars(clf) if name.endswith("_") and not name.startswith("_")}
    assert {"features_", "layer_", "layers_", "candidate_layers_", "deltas_", "layer_scores_"} <= fitted
    assert clf.candidate_layers_ == [1, 2] and clf.layers == [1, 2]  # the parameter is kept as given


def test_metrics_by_hand():
    m = metrics([1, 1, 0, 0, 1], [1, 0, 0, 1, 1])
    assert (m["accuracy"], m["precision"], m["recall"]) == pytest.approx((0.6, 2 / 3, 2 / 3))
    assert metrics([0, 0], [1, 0])["f1"] == 0.0


def test_cli_writes_tables_and_the_classifier(tmp_path, capsys):
    from qscope_lab.cli import main

    train, test = tmp_path / "train.csv", tmp_path / "test.jsonl"
    pd.DataFrame({"text": ZH_SEEDS[:8] + EN_SEEDS[:8], "label": [1] * 8 + [0] * 8}).to_csv(train, index=False)
    pd.DataFrame({"text": ZH_TEST[:8] + EN_TEST[:8], "label": [True] * 8 + [False] * 8}).to_json(
        test, orient="records", lines=True, force_ascii=False)
    assert main(["classify", "--train", str(train), "--test", str(test), "--save", str(tmp_path / "clf.json"),
                 "--out", str(tmp_path / "r")]) in (0, None)
    table = pd.read_csv(tmp_path / "r_metrics.csv").set_index("method")
    # Chinese vs English is easy enough that 20 random features, weighted on the seeds, also separate it
    assert table.loc["calibrated_rule", "f1"] >= max(0.9, table.loc["random_features", "f1"])
    assert table.loc["calibrated_rule", "f1"] > table.loc["report_rule", "f1"] - 0.05
    assert 1 <= len(pd.read_csv(tmp_path / "r_features.csv")) <= 20
    assert json.loads((tmp_path / "clf.json").read_text())["features"]
    assert main(["classify", "--train", str(tmp_path / "missing.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
    dense = ["classify", "--train", str(train), "--top-k", "all", "--save", str(tmp_path / "dense.json")]
    assert main(dense) in (0, None)
    assert json.loads((tmp_path / "dense.json").read_text())["top_k"] == "all"
    assert main(["classify", "--train", str(train), "--top-k", "many"]) == 2
    assert "top_k must be an int from 1 to 32, 'all' or 'auto', got 'many'" in capsys.readouterr().err
