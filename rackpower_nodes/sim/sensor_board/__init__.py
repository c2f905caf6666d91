"""Sensor-board emulator: writes protocol-v1 frames into a real pseudo-terminal.

The host side opens :attr:`SensorBoardEmulator.port_path` like a USB CDC device (pyserial or
plain ``open``). A background thread samples per-channel current waveforms at the configured
rate, converts amperes to ADC counts (``counts = round(A / scale + offset)``), encodes frames
with :mod:`rackpower_nodes.core.frame_codec` and writes them without blocking. Faults (bit
flips, board-side drops, garbage bursts) and cable pulls (:meth:`~SensorBoardEmulator.unplug`)
can be injected. The package also provides the ``rackpower-board-sim`` command (:func:`main`).

Parts: :mod:`.emulator` (the board), :mod:`.pty_io` (its FIFO and pty), :mod:`.sources`
(waveforms) and :mod:`.cli` (the command; ``python -m rackpower_nodes.sim.sensor_board`` runs
it too).
"""
from rackpower_nodes.sim.sensor_board.cli import main
from rackpower_nodes.sim.sensor_board.emulator import (
    BOOT_US,
    TICK_S,
    EmulatorStats,
    FaultConfig,
    SensorBoardEmulator,
    SensorBoardError,
)
from rackpower_nodes.sim.sensor_board.sources import (
    Source,
    constant_source,
    sine_source,
    steps_source,
)

__all__ = [
    "BOOT_US", "TICK_S", "EmulatorStats", "FaultConfig", "SensorBoardEmulator",
    "SensorBoardError", "Source", "constant_source", "main", "sine_source", "steps_source",
]
