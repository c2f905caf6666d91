"""The served forecaster and its permanent challengers (issue 13, item 4: never worse than
simple). :mod:`.served`: :class:`ServedForecaster` (members, offline start, live calls,
storage); :mod:`.online`: the per-key bias and per-class selection from matured errors;
:mod:`.replay`: the served forecaster over recorded windows, as served; :mod:`.risk`: the
loss bound's risk chosen by leave-one-group-out on the training data."""

from rackpower_nodes.core.forecast.challengers.online import ServedParams, variant_names
from rackpower_nodes.core.forecast.challengers.served import (
    DEFAULT_CLASS, MEMBER_CLASSES, ServedForecaster)

__all__ = ["DEFAULT_CLASS", "MEMBER_CLASSES", "ServedForecaster", "ServedParams",
           "variant_names"]
