"""Sources of training data: readers that turn recordings and files into ComponentSeries.

Each reader produces the one format the forecasting core consumes,
:class:`~rackpower_nodes.core.forecast.series.ComponentSeries` (documented in
``core/forecast/series.py`` and ``docs/forecast-data.md``):

- :mod:`.bags`: rosbag2 bags (sqlite3 or MCAP) recorded by the ``recorder`` node, through
  rosbags, with the typestore of rackpower's messages; also the logged allocation errors.
- :mod:`.csv_files`: BSC power-modelling CSV traces and the plain CSV format (read and
  written).

The simulator's adapter lives with the simulator (``rackpower_nodes.sim.dataset``). This
layer imports the core only.
"""
