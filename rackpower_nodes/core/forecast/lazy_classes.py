"""Forecaster classes by name, for the loaders (registry.py, the served ensemble), with the
LSTM's classes imported only when a model directory names them: the torch one's module loads
torch (about 200 MB of memory and 2 s of CPU), the ONNX one's onnxruntime (about 20 MB),
neither of which the predictor needs while it serves persistence or the baselines."""
from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from rackpower_nodes.core.forecast.base import Forecaster

__all__ = ["LSTM", "ONNX_LSTM", "ForecasterClasses", "import_class"]

LSTM = ("LstmForecaster", "rackpower_nodes.core.forecast.forecaster")
# serves an LstmForecaster's directory without torch (registry.py's runtime "onnx")
ONNX_LSTM = ("OnnxLstmForecaster", "rackpower_nodes.core.forecast.onnx_lstm")


def import_class(entry: tuple[str, str]) -> type[Forecaster]:
    """The class ``(name, module)`` names, importing its module on first use."""
    name, module = entry
    return getattr(importlib.import_module(module), name)


class ForecasterClasses(Mapping[str, type[Forecaster]]):
    """name -> class: `classes` as given, and the LSTM's looked up (imported) on first use."""

    def __init__(self, *classes: type[Forecaster], lazy: tuple[tuple[str, str], ...] = (LSTM,)):
        self._classes = {cls.__name__: cls for cls in classes}
        self._lazy = dict(lazy)

    def __getitem__(self, name: str) -> type[Forecaster]:
        if name not in self._classes and name in self._lazy:
            self._classes[name] = import_class((name, self._lazy[name]))
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(set(self._classes) | set(self._lazy)))

    def __len__(self) -> int:
        return len(set(self._classes) | set(self._lazy))
