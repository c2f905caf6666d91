"""Forecaster classes by name, for the loaders (registry.py, the served ensemble), with the
LSTM's class imported only when a model directory names it: its module loads torch (about
200 MB of memory and 2 s of CPU), which the predictor does not need while it serves
persistence or the baselines."""
from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from rackpower_nodes.core.forecast.base import Forecaster

__all__ = ["ForecasterClasses"]

LSTM = ("LstmForecaster", "rackpower_nodes.core.forecast.forecaster")


class ForecasterClasses(Mapping[str, type[Forecaster]]):
    """name -> class: `classes` as given, and the LSTM's looked up (imported) on first use."""

    def __init__(self, *classes: type[Forecaster], lazy: tuple[tuple[str, str], ...] = (LSTM,)):
        self._classes = {cls.__name__: cls for cls in classes}
        self._lazy = dict(lazy)

    def __getitem__(self, name: str) -> type[Forecaster]:
        if name not in self._classes and name in self._lazy:
            self._classes[name] = getattr(importlib.import_module(self._lazy[name]), name)
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(set(self._classes) | set(self._lazy)))

    def __len__(self) -> int:
        return len(set(self._classes) | set(self._lazy))
