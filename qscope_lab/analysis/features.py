"""Finding features: contrastive search, token-class precision / recall, top activating contexts.

These are how the steering workflow and the model card find features to use (REFERENCE section 2: features
are found contrastively or from their top-activating contexts). All of them read ``FeatureActs`` sparsely, so
memory grows with tokens x k, never tokens x d_sae.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import pandas as pd
import torch

from ..core import tokens
from ..core.activations import FeatureActs

if TYPE_CHECKING:
    from ..lab import Lab


def texts_firing(acts: FeatureActs) -> torch.Tensor:
    """[d_sae] number of texts in which each feature fires (> 0) at any counted position."""
    keep = acts.mask.unsqueeze(-1) & (acts.values > 0)
    rows, ranks = keep.nonzero(as_tuple=True)
    pairs = torch.unique(acts.text_index[rows] * acts.d_sae + acts.indices[rows, ranks])
    return torch.bincount(pairs % acts.d_sae, minlength=acts.d_sae)


def token_means(acts: FeatureActs) -> torch.Tensor:
    """[d_sae] mean activation per counted token (zeros included)."""
    values = acts.values * acts.mask.unsqueeze(-1)
    total = torch.zeros(acts.d_sae).index_add_(0, acts.indices.flatten(), values.flatten().float())
    return total / max(int(acts.mask.sum()), 1)


def contrast(lab: Lab, positive: Sequence[str], negative: Sequence[str], layer: int, top: int = 20,
             skip_first: bool = True, batch_size: int = 8) -> pd.DataFrame:
    """Features that fire in more positive than negative texts: delta = P(fires | pos) - P(fires | neg); with
    each one's display ``name``."""
    pos = lab.encode(list(positive), layer, batch_size=batch_size, skip_first=skip_first)
    neg = lab.encode(list(negative), layer, batch_size=batch_size, skip_first=skip_first)
    pos_rate = texts_firing(pos).float() / len(pos)
    neg_rate = texts_firing(neg).float() / len(neg)
    pos_mean, neg_mean = token_means(pos), token_means(neg)
    delta = pos_rate - neg_rate
    order = torch.argsort(delta + 1e-6 * (pos_mean - neg_mean), descending=True)[:top]
    return pd.DataFrame({"feature": order.numpy(), "name": lab.feature_names(layer, order.tolist()),
                         "pos_rate": pos_rate[order].numpy(),
                         "neg_rate": neg_rate[order].numpy(), "delta": delta[order].numpy(),
                         "pos_mean": pos_mean[order].numpy(), "neg_mean": neg_mean[order].numpy()})


def token_class_table(acts: FeatureActs, in_class: Callable[[str], bool] | torch.Tensor,
                      min_count: int = 20) -> pd.DataFrame:
    """Per feature, how well its firing marks a class of tokens: a predicate on the token string (Han
    characters, digits) or a bool label per token row (e.g. "inside Python code", or ``span_labels``).

    precision = P(token in class | feature fires), recall = P(feature fires | token in class), over counted
    positions; features firing fewer than ``min_count`` times are left out."""
    if callable(in_class):
        label = torch.tensor([bool(in_class(tok)) for toks in acts.tokens for tok in toks])
    else:
        label = torch.as_tensor(in_class, dtype=torch.bool)
        if label.shape != acts.mask.shape:
            raise ValueError(f"labels have shape {tuple(label.shape)}, need one per token ({acts.n_tokens})")
    label = label & acts.mask
    keep = acts.mask.unsqueeze(-1) & (acts.values > 0)
    rows, ranks = keep.nonzero(as_tuple=True)
    features = acts.indices[rows, ranks]
    fires = torch.bincount(features, minlength=acts.d_sae)
    hits = torch.bincount(features[label[rows]], minlength=acts.d_sae)
    n_class = max(int(label.sum()), 1)
    idx = (fires >= min_count).nonzero().squeeze(-1)
    frame = pd.DataFrame({"feature": idx.numpy(), "fires": fires[idx].numpy(),
                          "precision": (hits[idx].float() / fires[idx].float()).numpy(),
                          "recall": (hits[idx].float() / n_class).numpy()})
    frame["f1"] = 2 * frame.precision * frame.recall / (frame.precision + frame.recall).clip(lower=1e-12)
    frame = frame.sort_values("f1", ascending=False, ignore_index=True)
    frame.insert(1, "name", acts.names(frame.feature.tolist()))
    return frame


def span_labels(tokenizer, acts: FeatureActs, in_class: Callable[[str], bool]) -> torch.Tensor:
    """Per token of ``acts``, whether the text it covers (the tokenizer's character offsets) is in the class.

    Byte-level tokenizers split rarer characters into several tokens that each decode to U+FFFD alone, so a
    predicate on token strings calls them out of class; their offsets still point at the character. Judge a
    Han-script feature with these labels, or one that fires on every Han character looks imprecise."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("span_labels needs a fast tokenizer (character offsets); use a predicate on tokens instead")
    labels = []
    for text, ids in zip(acts.texts, acts.token_ids):
        enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
        if enc["input_ids"][:len(ids)] != list(ids):
            raise ValueError("acts were not tokenized by this tokenizer from these texts (token ids differ)")
        labels += [bool(in_class(text[start:end])) for start, end in enc["offset_mapping"][:len(ids)]]
    return torch.tensor(labels, dtype=torch.bool)


def top_contexts(acts: FeatureActs, feature: int, n: int = 10, window: int = 8, lab: Lab | None = None
                 ) -> pd.DataFrame:
    """The n strongest activations of ``feature`` with ``window`` tokens either side; the token in [[ ]].

    With ``lab``, a character split over byte tokens is shown whole (``core.tokens``): the [[ ]] token is its
    character, and ``boundary`` says which byte token of it fired."""
    per_text = acts.feature(feature)
    scores = torch.cat(per_text)
    n = min(n, int((scores > 0).sum()))
    best = torch.topk(scores, n).indices if n else torch.zeros(0, dtype=torch.long)
    rows = []
    for row in best.tolist():
        text = int(acts.text_index[row])
        pos = int(acts.position[row])
        if lab is None:
            toks, start, token, boundary = acts.tokens[text], pos, acts.tokens[text][pos], ""
        else:
            toks, starts = tokens.groups(lab, acts.token_ids[text])
            start, token, boundary = starts[pos], tokens.whole(toks, starts, pos), tokens.hover(toks, starts, pos)
        left = "".join(toks[max(0, pos - window):start])
        right = "".join(toks[pos + 1:pos + 1 + window])
        rows.append({"text": text, "position": pos, "token": token, "activation": float(scores[row]),
                     "context": f"{left}[[{token}]]{right}", "boundary": boundary})
    return pd.DataFrame(rows, columns=["text", "position", "token", "activation", "context", "boundary"])


def logit_table(lab: Lab, layer: int, feature: int, n: int = 10) -> pd.DataFrame:
    """Which tokens the feature's decoder direction promotes and suppresses: ``W_dec[:, f] @ W_U`` (the
    dashboards' logit table, no final norm), top and bottom ``n``."""
    sae = lab.sae(layer)
    sae.check_feature(feature)
    unembed = lab.hf_model.get_output_embeddings().weight
    logits = unembed.detach().float() @ sae.direction(feature).float().to(unembed.device)
    rows = []
    for side, largest in (("top", True), ("bottom", False)):
        best = torch.topk(logits, min(n, logits.numel()), largest=largest)
        for rank, (value, tok) in enumerate(zip(best.values.tolist(), best.indices.tolist())):
            rows.append({"side": side, "rank": rank, "token_id": tok, "token": tokens.raw_label(lab, tok),
                         "logit": value})
    return pd.DataFrame(rows)


def shared_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def compare_texts(lab: Lab, text_a: str, text_b: str, layers: Sequence[int] | int | None = None, top: int = 10,
                  skip_first: bool = True, skip_shared_prefix: bool = False) -> pd.DataFrame:
    """Per layer, the features whose firing rate (share of counted tokens where they fire) differs most between
    two texts: ``diff = rate_a - rate_b``, ranked by ``|diff|``, ``top`` per layer, each with its display
    name. ``skip_shared_prefix`` leaves out the tokens both texts start with (compare the continuations only,
    as the official demo does)."""
    layers = range(lab.n_layers) if layers is None else ([layers] if isinstance(layers, int) else layers)
    frames = []
    for layer in layers:
        acts = lab.encode([text_a, text_b], layer, skip_first=skip_first)
        mask = acts.mask.clone()
        if skip_shared_prefix:
            n = shared_prefix_length(*acts.token_ids)
            for i in range(2):
                mask[acts.rows(i).start:acts.rows(i).start + n] = False
        stats = []
        for i in range(2):
            rows = acts.rows(i)
            fired = acts.indices[rows][(acts.values[rows] > 0) & mask[rows].unsqueeze(-1)]
            n_counted = max(int(mask[rows].sum()), 1)
            stats.append(torch.bincount(fired, minlength=acts.d_sae).float() / n_counted)
        diff = stats[0] - stats[1]
        order = torch.argsort(diff.abs(), descending=True)[:top]
        order = order[diff[order] != 0]
        frames.append(pd.DataFrame({"layer": layer, "feature": order.numpy(),
                                    "name": acts.names(order.tolist()), "rate_a": stats[0][order].numpy(),
                                    "rate_b": stats[1][order].numpy(), "diff": diff[order].numpy()}))
    return pd.concat(frames, ignore_index=True)
