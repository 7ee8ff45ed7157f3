"""Seed-data classifier (REFERENCE section 2): label a few texts, keep a few SAE features with thresholds chosen
on the seeds; ``statistic="any"`` is the report's OR rule. Split by concept: ``classifier`` (the estimator),
``stats`` (per-text feature statistics from one scan), ``rules`` (ranking, thresholds, leave-one-out selection),
``baselines`` (report's rule, random features, logistic probe, seed draws), ``files`` (save / load)."""

from .baselines import compare_draws, summarize
from .classifier import SeedClassifier
from .common import NotFittedError, metrics
from .files import FORMAT, VERSION

__all__ = ["SeedClassifier", "NotFittedError", "metrics", "compare_draws", "summarize", "FORMAT", "VERSION"]
