"""Forecasting data: aligned series from every source and the model's input windows.

:mod:`.datasets` turns simulator runs, BSC CSV traces, plain CSV files and rosbag2 bags into
:class:`~.datasets.ComponentSeries` (mean power per step on a global Unix-time grid, host
telemetry, component spec, schedule). :mod:`.features` cuts them into the windows the
forecasters train on (:func:`~.features.build_windows`) and builds the identical inputs live
(:class:`~.features.OnlineWindows`). Layouts and file formats: ``docs/forecast-data.md``.
No rclpy import here; messages are read through their attributes.
"""
