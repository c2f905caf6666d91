"""Forecasting: the series format, the model's input windows, the forecasters and serving.

:mod:`.series` is the one format every source of training data produces and this package
consumes: :class:`~.series.ComponentSeries` (mean power per step on a global Unix-time grid,
host telemetry, component spec, schedule); the readers live above the core
(``rackpower_nodes.sources`` for bags and CSV files, ``rackpower_nodes.sim.dataset`` for the
simulator). :mod:`.messages` reads the numbers of rackpower's messages for both the bag reader
and the live predictor. :mod:`.features` cuts series into the windows the forecasters train on
(:func:`~.features.build_windows`) and :mod:`.online` builds the identical inputs live
(:class:`~.online.OnlineWindows`). :mod:`.base` is the forecaster interface,
:mod:`.forecaster` the quantile LSTM, :mod:`.baselines` the baselines, :mod:`.registry` the
model directories, :mod:`.serving` the model in service. Layouts and file formats:
``docs/forecast-data.md``. No rclpy import here; messages are read through their attributes.
"""
