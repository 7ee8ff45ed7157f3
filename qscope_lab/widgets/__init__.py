"""Notebook widgets on a Lab: each takes the Lab first and exposes its state as traitlets.

    from qscope_lab.widgets import Heatmap, FeatureCard, SteeringPanel, ClassifierPanel, Compare, Workbench
    from qscope_lab.widgets import Attribution, AttributionPanel, SteerBenchView
"""

from .attribution import Attribution, AttributionPanel
from .card import FeatureCard
from .classifier import ClassifierPanel
from .compare import Compare
from .heatmap import Heatmap
from .steerbench import SteerBenchView
from .steering import SteeringPanel
from .workbench import Workbench

__all__ = ["Heatmap", "FeatureCard", "SteeringPanel", "Compare", "Workbench", "ClassifierPanel", "Attribution",
           "AttributionPanel", "SteerBenchView"]
