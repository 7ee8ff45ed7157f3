"""The LLM explainer, in the manner of Delphi (EleutherAI, "Automatically Interpreting Millions of Features"): a chat
model sees a feature's contexts with the activating tokens marked ``<<token>>`` and their activation levels (0-10,
relative to the feature's strongest), drawn from its top contexts and from its quantile samples (weak firings too,
not only the peaks), and answers with a one-line explanation after ``[EXPLANATION]:``.
"""

from __future__ import annotations

import re

from .chat import Chat, Malformed
from .windows import Window, feature_windows

PROMPT_VERSION = "delphi-1"
SYSTEM = (
    "You are a meticulous AI researcher explaining a neuron-like feature of a language model. You will be shown "
    "text examples where the feature activates. Tokens where it activates are marked <<like this>>, and after "
    "each example the activating tokens are listed with their activation levels from 0 to 10. Look for what the "
    "marked tokens have in common (the tokens themselves, their context, the language or kind of text). "
    "Answer with one short line, in the form:\n[EXPLANATION]: <your explanation>")


def levels(windows: list[Window]) -> float:
    """The largest value over the windows (the 10 of the 0-10 scale)."""
    return max((float(w.values.max()) for w in windows if len(w.values)), default=0.0) or 1.0


def example(i: int, w: Window, top: float) -> str:
    """One example: the text with firing units marked, then (unit, level) pairs."""
    pairs = [f"({u!r}, {round(10 * v / top)})" for u, v in zip(w.units, w.values) if v > 0 and u.strip()]
    return f"Example {i}: {w.marked()}\nActivations: {', '.join(pairs) or 'none'}"


def pick(windows: list[Window], n_top: int, n_quantile: int) -> list[Window]:
    """The first ``n_top`` top contexts and up to ``n_quantile`` quantile samples (weakest to strongest)."""
    tops = [w for w in windows if w.top][:n_top]
    samples = [w for w in windows if not w.top]
    if len(samples) > n_quantile:
        step = len(samples) / n_quantile
        samples = [samples[int(i * step)] for i in range(n_quantile)]
    return tops + samples


def prompt(windows: list[Window]) -> list[dict]:
    """The messages for one feature."""
    top = levels(windows)
    body = "\n\n".join(example(i + 1, w, top) for i, w in enumerate(windows))
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"{body}\n\nWhat does this feature detect? Reply with one line: "
                                        f"[EXPLANATION]: ..."}]


def parse(reply: str) -> str:
    """The one-line explanation: what follows ``[EXPLANATION]:`` (the last one), else the first line with
    letters; Malformed when there is none or it is over 300 characters."""
    text = str(reply).strip()
    found = re.findall(r"\[?EXPLANATION\]?\s*:\s*(.+)", text, flags=re.I)
    line = found[-1] if found else next((s for s in text.splitlines() if re.search(r"\w", s)), "")
    line = line.strip().strip("\"'` ")
    if not re.search(r"\w", line):
        raise Malformed("no explanation in the reply")
    if len(line) > 300:
        raise Malformed(f"the explanation is {len(line)} characters long (one line, at most 300)")
    return line


def explain_features(index, layer: int, features: list[int], chat: Chat, n_top: int = 10, n_quantile: int = 10,
                     progress: bool | None = None) -> list[dict]:
    """One dict per feature: layer, feature, explanation (None when the chat failed), score (NaN: the
    explainer does not score itself; ``scorers`` do), scores (n examples, attempts, error, cached)."""
    wins = feature_windows(index, layer, features)
    shown = {f: pick(wins.get(f, []), n_top, n_quantile) for f in features}
    asked = [f for f in features if shown[f]]
    results = dict(zip(asked, chat.batch([prompt(shown[f]) for f in asked], parse=parse,
                                         prompt_version=PROMPT_VERSION, progress=progress, desc="explain")))
    out: list[dict] = []
    for f in features:
        r = results.get(f)
        if r is None:
            out.append({"layer": layer, "feature": f, "explanation": None, "score": float("nan"),
                        "scores": {"error": "no stored contexts"}})
            continue
        out.append({"layer": layer, "feature": f, "explanation": r.value if r.ok else None, "score": float("nan"),
                    "scores": {"examples": len(shown[f]), "attempts": r.attempts, "cached": r.cached,
                               "error": r.error}})
    return out
