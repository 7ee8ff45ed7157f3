"""What the widgets read from a Lab's feature index (``lab.use_index``) instead of encoding the reference corpus:
a card's statistics, contexts and histogram, hover labels from top tokens, corpus firing rates. Each function
returns None when the Lab has no index for that layer, and the caller falls back to ``Reference``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..viz.charts import binned_histogram

if TYPE_CHECKING:
    from ..index.store import FeatureIndex
    from ..lab import Lab


def index_for(lab: Lab, layer: int) -> FeatureIndex | None:
    """The Lab's index if it covers ``layer``."""
    index = getattr(lab, "index", None)
    return index if index is not None and layer in index.layers else None


def card(lab: Lab, layer: int, feature: int, n: int = 8, window: int = 10):
    """(stats, contexts, histogram chart) of a feature card read from the index, or None without one. Stats
    and context rows have the same keys as the reference path (contexts: left, token, right, activation,
    text = document id, boundary)."""
    index = index_for(lab, layer)
    if index is None:
        return None
    row = index.feature_stats(layer, feature)
    stats = {"layer": layer, "feature": feature, "tokens": index.tokens, "fires": int(row["firing_count"]),
             "firing_rate": float(row["density"]), "max_activation": float(row["max"]),
             "mean_activation": float(row["mean"]), "decoder_norm": float(lab.sae(layer).decoder_norms[feature]),
             "corpus": f"index of {index.documents:,} documents"}
    contexts = []
    for c in index.top_contexts(layer, feature, n=n).itertuples():
        contexts.append({"left": c.tokens[max(0, c.center - window):c.center], "token": c.token,
                         "right": c.tokens[c.center + 1:c.center + 1 + window], "boundary": c.boundary,
                         "activation": c.activation, "text": c.document})
    title = f"L{layer} f{feature}: fires on {stats['firing_rate']:.2%} of {stats['tokens']:,} indexed tokens"
    return stats, contexts, binned_histogram(index.histogram(layer, feature), title=title)


def hover_labels(lab: Lab, layer: int, features, n: int = 3) -> dict[str, str]:
    """``{feature id: "tok1 · tok2 · tok3"}``: the tokens each feature fires on most in the index (what a
    heatmap shows on hover where the user has no label), empty without an index."""
    index = index_for(lab, layer)
    if index is None:
        return {}
    tops = index.top_tokens(layer, n)
    return {str(int(f)): " · ".join(repr(t)[1:-1] for t in tops[int(f)]) for f in features if int(f) in tops}


def corpus_rates(lab: Lab, layer: int, features) -> list[float] | None:
    """Each feature's firing rate over the indexed corpus (None without an index)."""
    index = index_for(lab, layer)
    if index is None:
        return None
    density = index.stats(layer).density.to_numpy()
    return [float(density[int(f)]) for f in features]
