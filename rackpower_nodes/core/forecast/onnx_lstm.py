"""The LSTM served without torch: :class:`OnnxLstmForecaster` runs weights.onnx with onnxruntime.

``LstmForecaster.save_weights`` (forecaster.py) writes, beside the torch weights, the export of
the network (model.py) with a dynamic batch: inputs ``x`` (batch, history, F) float32
standardised features and ``base`` (batch,) float32 last normalised power, output ``q``
(batch, horizon, Q). This class reads the same model.json state (lstm_base.py) and predicts
what ``LstmForecaster.predict`` does (to float32 rounding), but imports neither torch nor
anything that does: importing onnxruntime costs about 20 MB of memory, torch about 200 MB.
registry.py's ``load_model(runtime="onnx" | "auto")`` builds it for an LSTM directory.
It only serves: fitting and saving stay with ``LstmForecaster``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from rackpower_nodes.core.forecast.base import ForecastInputError, ModelLoadError
from rackpower_nodes.core.forecast.lstm_base import ONNX_FILE, LstmBase, LstmParams

__all__ = ["ONNX_FILE", "OnnxLstmForecaster"]

# what onnxruntime raises for a file it cannot load or a run that fails (none is an OSError
# or RuntimeError)
_ORT_ERRORS = (ort_errors.Fail, ort_errors.InvalidArgument, ort_errors.NoSuchFile,
               ort_errors.NoModel, ort_errors.InvalidProtobuf, ort_errors.InvalidGraph,
               ort_errors.RuntimeException, ort_errors.NotImplemented, ort_errors.EPFail)


class OnnxLstmForecaster(LstmBase):
    """The quantile LSTM's ONNX export in an onnxruntime session (CPU), for serving.

    Args:
        params: the stored hyperparameters (``features``, ``input_clip`` matter here).
        threads: onnxruntime's intra- and inter-op threads of the session, fixed when
            ``load_weights`` opens it (set ``threads`` before loading).
    """

    runtime: ClassVar[str] = "onnx"

    def __init__(self, params: LstmParams | None = None, threads: int = 1) -> None:
        super().__init__(params)
        self.threads = threads
        self.session: ort.InferenceSession | None = None

    def fit(self, train: Any, val: Any | None = None) -> OnnxLstmForecaster:
        raise NotImplementedError("OnnxLstmForecaster only serves a saved LSTM: fit an "
                                  "LstmForecaster (forecaster.py) and save it")

    def save_weights(self, directory: Path) -> list[str]:
        raise NotImplementedError("OnnxLstmForecaster only serves a saved LSTM: save the "
                                  "LstmForecaster it was exported from")

    def load_weights(self, directory: Path) -> None:
        """Open ``directory``/weights.onnx on ``threads`` threads; raises ModelLoadError naming
        the file when it is missing or unreadable, or its inputs or output do not have the
        shapes model.json describes."""
        path = directory / ONNX_FILE
        width = self._check_state(directory / "model.json")
        if not path.is_file():
            raise ModelLoadError(path, "ONNX weights file is missing")
        if not 1 <= int(self.threads) <= 1024:
            raise ValueError(f"OnnxLstmForecaster.threads = {self.threads!r}, expected a value "
                             "in [1, 1024]")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = int(self.threads)
        try:
            session = ort.InferenceSession(str(path), sess_options=opts,
                                           providers=["CPUExecutionProvider"])
        except (*_ORT_ERRORS, OSError) as exc:
            raise ModelLoadError(path, f"unreadable ONNX model ({type(exc).__name__}: {exc})"
                                 ) from exc
        self._check_session(session, path, width)
        self.session = session

    def _check_session(self, session: ort.InferenceSession, path: Path, width: int) -> None:
        """The session's inputs x (batch, history, width) and base (batch,) and its output q
        (batch, horizon, Q), float32, as model.json describes the network."""
        want = {"x": ["batch", self.history_steps, width], "base": ["batch"],
                "q": ["batch", self.horizon_steps, len(self.quantiles)]}
        got = {a.name: a for a in [*session.get_inputs(), *session.get_outputs()]}
        if set(got) != set(want):
            raise ModelLoadError(path, f"inputs and outputs are {sorted(got)}, expected "
                                 f"{sorted(want)}")
        for name, shape in want.items():
            arg = got[name]
            fixed = [d if isinstance(d, int) else "batch" for d in arg.shape]
            if fixed != shape or arg.type != "tensor(float)":
                raise ModelLoadError(path, f"{name} is {arg.type} {arg.shape}, expected "
                                     f"tensor(float) {shape} (batch, history, features / "
                                     f"horizon steps, quantiles)")

    def predict(self, x: np.ndarray, last: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        """See Forecaster.predict; runs on the session's ``threads``. A failed run raises
        RuntimeError."""
        if self.session is None:
            raise ForecastInputError("lstm: predict called before load")
        x, last = self._check_input(x, last)
        out = []
        for i in range(0, len(x), batch_size):
            sl = slice(i, i + batch_size)
            feeds = {"x": np.ascontiguousarray(self._scaled(x[sl])),
                     "base": np.ascontiguousarray(last[sl])}
            try:
                out.append(self.session.run(["q"], feeds)[0])
            except _ORT_ERRORS as exc:
                raise RuntimeError(f"lstm (onnx): inference failed ({type(exc).__name__}: "
                                   f"{exc})") from exc
        if not out:
            return np.zeros((0, self.horizon_steps, len(self.quantiles)), np.float32)
        return self._calibrated(np.concatenate(out).astype(np.float32, copy=False))
