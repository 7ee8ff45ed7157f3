"""What the widgets read from a ``FeatureSource`` (``index.source``): the Lab's feature index (``lab.use_index``)
where it covers the layer, else a reference corpus. A card's statistics, contexts and histogram come out the same
from either, in the source's own columns; hover labels and corpus firing rates come from the index alone (None /
empty without one)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..viz.charts import binned_histogram

if TYPE_CHECKING:
    from ..index.source import FeatureSource
    from ..index.store import FeatureIndex
    from ..lab import Lab


def index_for(lab: Lab, layer: int) -> FeatureIndex | None:
    """The Lab's index if it covers ``layer``."""
    index = getattr(lab, "index", None)
    return index if index is not None and layer in index.layers else None


def card(lab: Lab, source: FeatureSource, layer: int, feature: int, n: int = 8, window: int = 10):
    """(stats, contexts, histogram chart) of a feature card read from ``source``. Stats: the source's
    ``feature_stats`` (``STAT_COLUMNS``, and whatever more it says) with layer, tokens (counted) and
    decoder_norm; contexts: left, token, right (``window`` tokens either side), boundary, activation, text (the
    document id)."""
    stats = {**source.feature_stats(layer, feature), "layer": layer, "feature": feature,
             "tokens": source.counted_tokens(layer), "decoder_norm": float(lab.sae(layer).decoder_norms[feature])}
    contexts = []
    for c in source.top_contexts(layer, feature, n=n).itertuples():
        contexts.append({"left": list(c.tokens[max(0, c.center - window):c.center]), "token": c.token,
                         "right": list(c.tokens[c.center + 1:c.center + 1 + window]), "boundary": c.boundary,
                         "activation": float(c.activation), "text": int(c.document)})
    title = (f"L{layer} f{feature}: fires on {stats['firing_rate']:.2%} of {stats['tokens']:,} {source.name} tokens"
             + ("" if stats.get("complete", True) else " (so far)"))
    return stats, contexts, binned_histogram(source.histogram(layer, feature), title=title)


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
    rate = index.stats(layer).firing_rate.to_numpy()
    return [float(rate[int(f)]) for f in features]
