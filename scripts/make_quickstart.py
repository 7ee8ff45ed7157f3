"""Write notebooks/quickstart.ipynb from the cells below (keeps the notebook reviewable as code, output-free)."""

from pathlib import Path

import nbformat as nbf

CELLS = [
    ("md", "# qscope-lab quickstart\n\nThe embedded default: a tiny Qwen3 model trained by the project, with a "
           "TopK SAE at every layer. Everything below runs offline on a laptop CPU; swap `Lab.load()` for "
           "`Lab.load(\"Qwen/Qwen3-1.7B-Base\", device=\"cuda\")` to use the real Qwen-Scope SAEs."),
    ("code", "from qscope_lab import Lab\n\nlab = Lab.load()\nlab"),
    ("md", "## Features of every token\n`encode` gives the SAE's top-k features per token; `to_frame` a table."),
    ("code", "acts = lab.encode([\"The cat sat on the mat.\", \"猫坐在垫子上。\", \"def add(a, b):\\n    return a + b\"],"
             " layer=2, skip_first=True)\nacts.to_frame().head(12)"),
    ("code", "acts.top_features(10, max_firing_rate=0.5)"),
    ("md", "## How faithful is the SAE?\nFraction of variance unexplained, cosine, and the next-token loss with "
           "the SAE spliced into the forward pass."),
    ("code", "lab.reconstruct([\"The weather today is fine and the children are playing outside.\", "
             "\"今天天气很好，孩子们在外面玩。\"], layer=[1, 2])"),
    ("md", "## Find a feature and steer with it\nA Chinese-language feature, found contrastively, added to an "
           "English prompt."),
    ("code", "from qscope_lab.features import contrast\n\nzh = [\"我们今天去公园散步。\", \"这本书非常有意思。\", "
             "\"中国的历史很长。\"]\nen = [\"We walked in the park today.\", \"This book is very interesting.\", "
             "\"The history of China is long.\"]\ntable = contrast(lab, zh, en, layer=2, top=5)\ntable"),
    ("code", "feature = int(table.feature[0])\nlab.generate(\"The weather today is\", layer=2, "
             "steer={feature: 16.0}, max_new_tokens=32)"),
]


def main() -> None:
    nb = nbf.v4.new_notebook()
    nb.cells = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src) for kind, src in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    out = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"
    nbf.write(nb, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
