"""The rack simulator in real time, playing the rack's hardware for the live graph.

`LiveRack` runs a `RackSimulator` against the wall clock and drives:
  - the sensor-board emulator on a pty: component k's current on board channel k (or as
    mapped), so `current_sensor` reads the simulated rack through the real frame protocol;
  - one node_exporter-compatible endpoint per simulated host on loopback, whose counters
    advance with the host's simulated CPU, memory, network and disk activity, so
    `host_telemetry` scrapes it like a real server.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from rackpower_nodes.core.frame_codec import FrameLayout
from rackpower_nodes.sim.node_exporter import ExporterFleet, SimulatedHost
from rackpower_nodes.sim.rack_sim import RackSimulator, load_config
from rackpower_nodes.sim.sensor_board import FaultConfig, SensorBoardEmulator

_log = logging.getLogger(__name__)


class LiveRack:
    """Simulated rack hardware: a sensor board on a pty and node_exporter endpoints.

    Args:
        board_link: path of the symlink to the board's pty (what `serial.port` names).
        config, seed: rack simulator configuration (YAML path or mapping) and seed.
        board_channels, board_rate_hz, scale_a_per_count: the emulated board.
        channel_map: component index per board channel (default: component k on channel k).
        exporter_base_port: host i (in config order) serves on base + i; 0 picks free ports.
        faults: line faults injected by the board emulator.
        telemetry_hz: how often the exporters' counters advance, Hz.
        start_unix: the wall-clock time simulated time 0 stands for (default: now), so the
            day's rhythm and the workload schedule follow the real clock, as host_telemetry's
            calendar and schedule features do.
    """

    def __init__(self, board_link: str, config=None, seed: int | None = None,
                 board_channels: int = 64, board_rate_hz: float = 1000.0,
                 scale_a_per_count: float = 0.001,
                 channel_map: Sequence[int | None] | None = None, exporter_base_port: int = 0,
                 faults: FaultConfig = FaultConfig(), telemetry_hz: float = 10.0,
                 start_unix: float | None = None):
        rack = load_config(config)
        rack = dataclasses.replace(
            rack, start_unix=time.time() if start_unix is None else float(start_unix))
        self.sim = RackSimulator(rack, seed)
        n = len(self.sim.names)
        if channel_map is None:
            channel_map = list(range(min(n, board_channels)))
        self.channel_map = list(channel_map)
        self.board = SensorBoardEmulator(
            FrameLayout(board_channels), board_rate_hz,
            self.sim.current_source(self.channel_map, board_channels),
            scale_a_per_count=scale_a_per_count, link_path=board_link, faults=faults,
            board_clock="wall")
        hosts = {}
        for name in self.sim.config.hosts:
            state = self.sim.host_state(name, 0.0)
            hosts[name] = SimulatedHost(name, n_cpus=state.n_cpus,
                                        mem_total_bytes=state.mem_total_bytes)
        self.fleet = ExporterFleet(hosts, base_port=exporter_base_port)
        self._period = 1.0 / telemetry_hz
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-rack", daemon=True)
        self._t0 = 0.0

    def start(self) -> LiveRack:
        self.fleet.start()
        self._t0 = time.monotonic()
        self.board.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        self.board.stop()
        self.fleet.stop()

    def __enter__(self) -> LiveRack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def sim_time(self) -> float:
        """Seconds of simulated time since start (= wall seconds since start)."""
        return time.monotonic() - self._t0

    def manifest(self) -> dict:
        """What the nodes need to find this rack: board link, channel map, exporter URLs."""
        names = self.sim.names
        return {
            "board_link": self.board.port_path,
            "board_channels": self.board.layout.channels,
            "board_rate_hz": self.board.rate_hz,
            "components": [names[c] for c in self.channel_map if c is not None and c >= 0],
            "board_index": [k for k, c in enumerate(self.channel_map)
                            if c is not None and c >= 0],
            "hosts": list(self.fleet.urls),
            "host_urls": list(self.fleet.urls.values()),
        }

    def write_manifest(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.manifest(), indent=2))

    def _run(self) -> None:
        last = self.sim_time()
        while not self._stop.wait(self._period):
            now = self.sim_time()
            self._advance_hosts(last, now)
            last = now

    def _advance_hosts(self, t_from: float, t_to: float) -> None:
        """Integrate each host's counters from `t_from` to `t_to` (s of simulated time)."""
        dt = t_to - t_from
        if dt <= 0:
            return
        mid = 0.5 * (t_from + t_to)
        for name, host in self.fleet.hosts.items():
            s = self.sim.host_state(name, mid)
            host.advance(dt, s.cpu_util, s.mem_used_bytes, s.net_rx_bytes_per_s,
                         s.net_tx_bytes_per_s, s.disk_read_bytes_per_s, s.disk_write_bytes_per_s)
