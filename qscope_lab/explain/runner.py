"""``explain(lab, layer, ...)``: words for a layer's features by one explainer, stored with the index and resumed.

Features already explained by the same explainer, model and prompt version are read back, not redone (a rerun
of a layer costs a table read); new explanations are added to the index's table as each batch finishes
(``index.explanations``), so an interrupted run keeps what it finished.

``engine="ray"`` runs the batches as Ray tasks (``workers`` at a time, on the cluster at ``address``; a local one
is started when none is): each task opens the index by its path and returns rows; the driver stores each batch as
it finishes, as the local engine does, so both store the same table and a killed run resumes alike. The LLM
explainer's ``chat`` travels to the workers pickled (a plain function, ``Chat.function``, ``Chat.openai``); its
judge scores on the driver. Requires ``pip install 'qscope-lab[distributed]'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.protocol import LabLike

import contextlib

import pandas as pd

from ..base import validate
from ..base.progress import bar
from ..index.explanations import add_explanations

EXPLAINERS = ("offline", "llm")
ENGINES = ("local", "ray")
OUT_COLUMNS = ("layer", "feature", "explanation", "score", "explainer", "model", "prompt_version", "scores")


def check_features(features, d_sae: int) -> list[int] | None:
    """None (every feature) or a non-empty list of distinct feature ids (order kept)."""
    if features is None:
        return None
    if validate._is_int(features):
        return [validate.feature(features, d_sae)]
    if isinstance(features, (str, bytes, dict)) or not hasattr(features, "__iter__"):
        raise TypeError(f"features must be an int, a list of ints or None, got {type(features).__name__}")
    out = list(dict.fromkeys(validate.feature(f, d_sae, "features") for f in features))
    if not out:
        raise ValueError("features is empty: give at least one feature id, or None for all")
    return out


def _index(lab: LabLike):
    if lab.index is None:
        raise ValueError("this Lab has no feature index: lab.use_index(folder) (FeatureIndex.build makes one)")
    return lab.index


def explain(lab: LabLike, layer, features=None, explainer: str = "offline", chat=None, *, overwrite: bool = False,
            batch: int = 64, progress: bool | None = None, engine: str = "local", address: str | None = None,
            workers: int | None = None, **options) -> pd.DataFrame:
    """Explain ``features`` (default: all) of ``layer`` with ``explainer`` ("offline": patterns from the index,
    no LLM; "llm": ``chat`` writes them, Delphi's way, ``llm.explain``'s options) and store them with the index,
    ``batch`` features at a time. ``engine="ray"`` runs the batches as Ray tasks, ``workers`` at a time (default:
    the cluster's CPUs) on the cluster at ``address`` (default: the running one, else a local one).
    Returns ``OUT_COLUMNS``, one row per feature asked (stored ones included; ``overwrite=True`` redoes them);
    ``attrs["failures"]``: rows the chat failed, ``attrs["computed"]``: the features this call computed."""
    index = _index(lab)
    layer = lab.check_layer(layer)
    if layer not in index.layers:
        raise ValueError(f"layer {layer} is not in the index (layers: {index.layers})")
    explainer = validate.choice(explainer, EXPLAINERS, "explainer")
    engine = validate.choice(engine, ENGINES, "engine")
    if workers is not None:
        workers = validate.integer(workers, "workers", minimum=1)
    if address is not None and not isinstance(address, str):
        raise TypeError(f"address must be a str such as 'auto' or 'ray://host:10001', or None, got "
                        f"{type(address).__name__}")
    features = check_features(features, index.d_sae)
    batch = validate.integer(batch, "batch", minimum=1)
    wanted = list(range(index.d_sae)) if features is None else features
    if explainer == "offline":
        from . import offline

        model, version = offline.MODEL, offline.PROMPT_VERSION
        if chat is not None:
            raise ValueError("the offline explainer takes no chat; use explainer='llm' for a chat model")

        def finish(rows):
            return rows
    else:
        from .chat import as_chat
        from .llm import PROMPT_VERSION

        if chat is None:
            raise ValueError("explainer='llm' needs chat= (an OpenAI-compatible endpoint, a transformers chat "
                             "model or a function messages -> str; explain.chat.Chat)")
        chat = as_chat(chat)
        model, version = chat.model, PROMPT_VERSION

        scorers = options.pop("scorers", ("detection",))
        judge = as_chat(options.pop("judge", None) or chat)
        score_options = {k: options.pop(k) for k in ("n_examples", "per_prompt", "seed") if k in options}

        def finish(rows):
            return _scored(lab, index, layer, rows, judge, scorers, progress, score_options)
    if engine == "ray":
        ray = _ray()
        _check_sendable(ray, chat)
    done = set() if overwrite else _done(index, explainer, model, version, layer)
    todo = [f for f in wanted if f not in done]
    batches = [todo[start:start + batch] for start in range(0, len(todo), batch)]
    if engine == "local":
        results = ((fs, _compute(index, layer, fs, explainer, chat, options, progress)) for fs in batches)
    else:
        results = _on_ray(ray, index.path, layer, batches, explainer, chat, options, workers, address)
    failures: list[dict] = []
    computed: list[int] = []
    with contextlib.closing(results), bar(len(todo), progress, desc=f"explain L{layer} ({explainer})") as pbar:
        for fs, rows in results:
            rows = finish(rows)
            good = [r for r in rows if r.get("explanation") is not None]
            failures += [r for r in rows if r.get("explanation") is None]
            if good:
                frame = pd.DataFrame(good)
                frame["explainer"], frame["model"], frame["prompt_version"] = explainer, model, version
                add_explanations(index.path, frame)
            computed += fs
            pbar.update(len(fs))
    table = index.explanations()
    pick = ((table.explainer == explainer) & (table.model == model) & (table.prompt_version == version)
            & (table.layer == layer) & table.feature.isin(wanted))
    out = table[pick].set_index("feature").reindex(wanted).reset_index()
    out["layer"], out["explainer"], out["model"], out["prompt_version"] = layer, explainer, model, version
    out = out[list(OUT_COLUMNS)]
    out.attrs["failures"] = failures
    out.attrs["computed"] = computed
    return out


def _compute(index, layer: int, fs: list[int], explainer: str, chat, options: dict, progress) -> list[dict]:
    """One batch's rows, unscored: what a local loop or a Ray task computes."""
    if explainer == "offline":
        from . import offline

        return offline.explain(index, layer, fs, **options)
    from .llm import explain_features

    return explain_features(index, layer, fs, chat, progress=progress, **options)


def _ray():
    try:
        import ray
    except ImportError:
        raise ImportError("engine='ray' needs Ray: pip install 'qscope-lab[distributed]'") from None
    return ray


def _check_sendable(ray, chat) -> None:
    """Refuse, before any work, a chat that cannot travel to Ray workers (a local transformers model, a function
    holding locks or open files)."""
    if chat is None:
        return
    try:
        ray.cloudpickle.dumps(chat)
    except Exception as err:
        raise TypeError(f"chat {chat!r} cannot be sent to Ray workers ({type(err).__name__}: {str(err)[:120]}): "
                        "with engine='ray' pass a plain function messages -> str, Chat.function(f) or "
                        "Chat.openai(base_url, model) (a server the workers reach), or use engine='local'") from None


_OPEN: dict = {}  # a Ray worker process opens each index once


def _remote_batch(path, layer: int, fs: list[int], explainer: str, chat, options: dict):
    """A Ray task: (features, rows, the chat's cost of this batch) for one batch, the index opened by path."""
    from ..index.store import FeatureIndex

    key = str(path)
    if key not in _OPEN:
        _OPEN[key] = FeatureIndex(path)
    before = chat.cost.as_dict() if chat is not None else {}
    rows = _compute(_OPEN[key], layer, fs, explainer, chat, options, False)
    cost = {k: v - before[k] for k, v in chat.cost.as_dict().items()} if chat is not None else {}
    return fs, rows, cost


def _loads(chat) -> bool:
    """A Ray task: True once ``chat`` is unpickled in a worker."""
    return chat is not None


def _on_ray(ray, path, layer: int, batches: list[list[int]], explainer: str, chat, options: dict,
            workers: int | None, address: str | None):
    """Yield (features, rows) per batch as Ray tasks finish, ``workers`` in flight; the tasks still running
    when the caller stops (an error, an interrupt) are cancelled. The chat's cost in the workers is added to
    ``chat.cost``."""
    if not batches:
        return
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    task = ray.remote(num_cpus=1)(_remote_batch)
    chat_ref = ray.put(chat)
    if chat is not None:  # a function of a module the workers cannot import pickles here and fails there
        try:
            ray.get(ray.remote(num_cpus=0)(_loads).remote(chat_ref))
        except Exception as err:
            why = (str(err).strip().splitlines() or [type(err).__name__])[-1][:160]
            raise TypeError(f"chat {chat!r} cannot be loaded in the Ray workers ({why}): define its function in "
                            "the notebook (__main__) or make its module importable there "
                            "(ray.init(runtime_env=...)), or use engine='local'") from None
    waiting = iter(batches)
    pending: list = []
    try:
        while True:
            for fs in waiting:
                pending.append(task.remote(path, layer, fs, explainer, chat_ref, options))
                if len(pending) >= workers:
                    break
            if not pending:
                return
            ready, pending = ray.wait(pending, num_returns=1)
            fs, rows, cost = ray.get(ready[0])
            if chat is not None:
                chat.cost.add(**cost)
            yield fs, rows
    finally:
        for ref in pending:
            ray.cancel(ref)


def _scored(lab: LabLike, index, layer, rows, judge, scorers, progress, options) -> list[dict]:
    """Rows of the LLM explainer with their judge scores: ``score`` is the mean F1 over ``scorers`` (NaN when the
    judge answered none), every metric kept in ``scores``."""
    from .scorers import score

    good = {r["feature"]: r["explanation"] for r in rows if r.get("explanation") is not None}
    if not scorers or not good:
        return rows
    table = score(index, layer, good, judge, scorers=scorers, lab=lab, progress=progress, **options)
    for r in rows:
        if r["feature"] not in good:
            continue
        mine = table[table.feature == r["feature"]]
        r["scores"] = {**r["scores"], **{f"{row.scorer}.{m}": (None if pd.isna(getattr(row, m)) else
                                                               float(getattr(row, m)))
                                         for row in mine.itertuples() for m in ("accuracy", "f1", "answered",
                                                                               "failures")}}
        f1 = mine.f1[mine.answered > 0]
        r["score"] = float(f1.mean()) if len(f1) else float("nan")
    return rows


def _done(index, explainer, model, version, layer) -> set[int]:
    from ..index.explanations import explained

    return explained(index.path, explainer, model, version, layer)
