"""The rack simulator in real time, playing the rack's hardware for the live graph.

`LiveRack` runs a `RackSimulator` against the wall clock and drives:
  - the sensor-board emulator on a pty: component k's current on board channel k (or as
    mapped), so `current_sensor` reads the simulated rack through the real frame protocol;
  - one node_exporter-compatible endpoint per simulated host on loopback, whose counters
    advance with the host's simulated CPU, memory, network and disk activity, so
    `host_telemetry` scrapes it like a real server;
  - one Modbus TCP PDU per `rack.pdus` entry on loopback (`rackpower_nodes.sim.pdu`), all fed
    by one modelled breaker: each component's outlet serves min(demand, allocation), so the
    board's currents are the PDU-served power / voltage and throttling shows on the board;
  - with the PDUs, a Redfish BMC endpoint on loopback (`rackpower_nodes.sim.bmc`) with one
    chassis per server (`/redfish/v1/Chassis/<name>`): a power limit written there caps that
    server's outlet like an allocation. Servers alternate between the EnvironmentMetrics and
    the legacy Power schema (`bmc_api="alternate"`), so both are exercised; a limit is allowed
    from the server's idle power (in whole watts, rounded down) to its PSU rating. A chassis
    whose model has a PSU (`psu`, `reference_psu` or `gpu.psu` in the config) also serves its
    PSUs' own meters, `Power.PowerSupplies[]` (a 1+1 pair sharing the load, each rated as the
    model's PSU), refreshed every `PSU_POLL_S` (10) s from the outlet's served power over the
    second and the injected `psu_efficiency` faults, by the meter model the fast-mode health
    frames use (`rackpower_nodes.sim.psu_meters`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rackpower_nodes.core.frame_codec import FrameLayout
from rackpower_nodes.core.pdu_map import load_register_map
from rackpower_nodes.sim.bmc import SimBmcServer
from rackpower_nodes.sim.faults import FaultSpec
from rackpower_nodes.sim.node_exporter import ExporterFleet, SimulatedHost
from rackpower_nodes.sim.pdu import PduModel, SimPduServer
from rackpower_nodes.sim.psu_meters import PSU_POLL_S, LivePsuMeters, psu_loss, psu_ratings_w
from rackpower_nodes.sim.rack_sim import RackSimulator, load_config
from rackpower_nodes.sim.sensor_board import FaultConfig, SensorBoardEmulator

_log = logging.getLogger(__name__)

BMC_APIS = ("alternate", "environment_metrics", "power_control")   # alternate: by server


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
        pdu_base_port: PDU i (in `rack.pdus` order) serves Modbus TCP on base + i; 0 picks
            free ports; None runs no PDUs (the board then shows raw demand).
        pdu_map: register map of the simulated PDUs (preset name or YAML path).
        pdu_host: address the PDUs listen on.
        outlet_rating_w: every outlet's rating and initial allocation, W (default: 10 A at
            the rack's nominal voltage, an IEC C13 outlet).
        bmc_port: the servers' Redfish endpoint listens here; 0 picks a free port; None runs
            no BMCs (also when there are no PDUs: the PDU model enforces the limits).
        feeds: a ``feeds:`` YAML path or mapping (sim/feeds/config.py): the PDUs hang on
            redundant feeds with a breaker each, which `feeds.fail`/`restore` drop and bring
            back (sim/feeds/live.py); None: one breaker, as before.
        bmc_api: environment_metrics, power_control, or alternate (by server).
        bmc_username, bmc_password: the BMC credentials.
        sim_faults: simulated component and sensor faults (`FaultSpec`, onsets in s after
            start); more can be injected while running (`inject_fault`). Component faults show
            on the PDUs, the BMCs and the board; sensor faults on the board only.
    """

    def __init__(self, board_link: str, config=None, seed: int | None = None,
                 board_channels: int = 64, board_rate_hz: float = 1000.0,
                 scale_a_per_count: float = 0.001,
                 channel_map: Sequence[int | None] | None = None, exporter_base_port: int = 0,
                 faults: FaultConfig = FaultConfig(), telemetry_hz: float = 10.0,
                 start_unix: float | None = None, pdu_base_port: int | None = 0,
                 pdu_map: str = "rackpower_sim", pdu_host: str = "127.0.0.1",
                 outlet_rating_w: float | None = None, bmc_port: int | None = None,
                 bmc_api: str = "alternate", bmc_username: str = "admin",
                 bmc_password: str = "rackpower", sim_faults: Sequence[FaultSpec] = (),
                 feeds=None):
        rack = load_config(config)
        rack = dataclasses.replace(
            rack, start_unix=time.time() if start_unix is None else float(start_unix))
        self.sim = RackSimulator(rack, seed, faults=sim_faults)
        n = len(self.sim.names)
        if channel_map is None:
            channel_map = list(range(min(n, board_channels)))
        self.channel_map = list(channel_map)
        self.pdu_lock = threading.Lock()
        self.pdu_model: PduModel | None = None
        self.pdus: dict[str, SimPduServer] = {}
        if pdu_base_port is not None:
            self._make_pdus(pdu_base_port, pdu_map, pdu_host, outlet_rating_w)
        self.feeds = None           # redundant feeds under the PDUs (sim/feeds/live.py)
        if feeds is not None and self.pdu_model is not None:
            self.feeds = self._make_feeds(feeds)
        self.bmc: SimBmcServer | None = None
        self._bmc_servers: list[str] = []
        self._psu: LivePsuMeters | None = None      # the chassis' PSU meters
        self._psu_cols = np.zeros(0, dtype=np.int64)
        self._psu_next = 0.0                        # sim time of the next refresh, s
        if bmc_port is not None and self.pdu_model is not None:
            self._make_bmc(bmc_port, pdu_host, bmc_api, bmc_username, bmc_password)
        self.board = SensorBoardEmulator(
            FrameLayout(board_channels), board_rate_hz,
            self._board_source(board_channels),
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

    def _make_pdus(self, base_port: int, map_name: str, host: str,
                   outlet_rating_w: float | None) -> None:
        """One model (one breaker) over every PDU's outlets; a server per PDU."""
        cfg = self.sim.config
        pdus = {str(k): int(v["outlets"]) for k, v in cfg.raw["rack"]["pdus"].items()}
        first, total = {}, 0
        for name, n in pdus.items():
            first[name], total = total, total + n
        rating = cfg.nominal_v * cfg.power_factor * 10.0 if outlet_rating_w is None \
            else float(outlet_rating_w)
        self.pdu_model = PduModel(np.full(total, rating), cfg.breaker_w)
        self._outlet_of = np.array([first[c.pdu] + c.outlet - 1 for c in cfg.components])
        base_map = load_register_map(map_name)
        for i, (name, n) in enumerate(pdus.items()):
            port = base_port + i if base_port else 0
            self.pdus[name] = SimPduServer(
                base_map.with_outlets(n), self.pdu_model, host, port, unit_id=1,
                voltage_v=cfg.nominal_v, first_outlet=first[name], lock=self.pdu_lock)

    def _make_feeds(self, source):
        """`LiveFeeds` of a ``feeds:`` YAML path or mapping (sim/feeds/config.py)."""
        from rackpower_nodes.sim.feeds import load_feeds
        from rackpower_nodes.sim.feeds.live import LiveFeeds

        cfg = self.sim.config
        feeds = load_feeds(source, cfg)
        if feeds is None:
            raise ValueError(f"feeds = {source!r}: no feeds: section there")
        return LiveFeeds(feeds, self.pdu_model, self._outlet_of,
                         [c.pdu for c in cfg.components], self.pdus, self.pdu_lock)

    def _make_bmc(self, port: int, host: str, api: str, username: str, password: str) -> None:
        """One Redfish endpoint with a chassis per server, its limits fed to the PDU model."""
        if api not in BMC_APIS:
            raise ValueError(f"bmc_api = {api!r}: expected one of {', '.join(BMC_APIS)}")
        servers = [c for c in self.sim.config.components if c.kind == "server"]
        self._bmc_servers = [c.name for c in servers]
        outlet = {c.name: int(self._outlet_of[c.index]) for c in servers}
        apis, lo, hi, psus = {}, {}, {}, {}
        for k, c in enumerate(servers):
            apis[c.name] = (("environment_metrics", "power_control")[k % 2] if api == "alternate"
                            else api)
            # whole watts, as BMCs publish them, at or below the idle power
            lo[c.name] = float(np.floor(c.model.steady_power_w(np.zeros(1))[0]))
            psu = c.model.psu or c.model.reference_psu
            hi[c.name] = float(psu.rating_w) if psu is not None else 1000.0
            psu = psu or getattr(getattr(c.model, "gpu", None), "psu", None)
            if psu is not None:
                psus[c.name] = (float(psu.rating_w),) * 2       # a 1+1 redundant pair

        def power_w(name: str) -> float:
            with self.pdu_lock:
                return float(self.pdu_model.served_w[outlet[name]])

        def on_limit(name: str, watts: float | None) -> None:
            with self.pdu_lock:
                self.pdu_model.set_server_caps([outlet[name]],
                                               np.inf if watts is None else watts)

        self.bmc = SimBmcServer(self._bmc_servers, host=host, port=port, api=apis,
                                allowable_min_w=lo, allowable_max_w=hi, power_w=power_w,
                                on_limit=on_limit, username=username, password=password,
                                psus=psus)
        if psus:
            cols = [self.sim.index(name) for name in psus]
            self._psu_cols = np.array(cols, dtype=np.int64)
            self._psu = LivePsuMeters(list(psus), psu_ratings_w(self.sim.config)[cols],
                                      sim_seed=self.sim.seed)

    def _refresh_psus(self, t_s: float) -> None:
        """New PSU readings on the BMC: the outlets' served power over the second from
        `t_s` (s of simulated time) and the faults' extra input loss then."""
        cols = self._psu_cols
        rate = self.sim.rate_hz
        power = self.sim.power_at(t_s + np.arange(rate) / rate)[:, cols]
        with self.pdu_lock:
            cap = self.pdu_model.cap_w()[self._outlet_of[cols]]
        wall = np.minimum(power, cap).mean(axis=0)
        loss = psu_loss(self.sim.faults, self.sim.names, np.array([t_s]))[0, cols]
        p_in, p_out = self._psu.read(t_s, wall, loss)
        for name, a, b in zip(self._psu.names, p_in.tolist(), p_out.tolist()):
            self.bmc.set_psu_readings(name, (a / 2, a / 2), (b / 2, b / 2))

    def _board_source(self, channels: int):
        """Board currents (A): each channel's component power as served by its outlet, as the
        channel reads it (sensor faults)."""
        self.sim.current_source(self.channel_map, channels)      # validates the map
        cols = np.array([-1 if c is None else int(c) for c in self.channel_map], dtype=np.int64)
        board = np.flatnonzero(cols >= 0)
        comps = cols[board]
        volts = self.sim.config.nominal_v * self.sim.config.power_factor

        def source(t_s: np.ndarray) -> np.ndarray:
            t = np.asarray(t_s, dtype=np.float64)
            out = np.zeros((t.size, channels))
            if board.size:
                power = self.sim.power_at(t)[:, comps]
                if self.pdu_model is not None:
                    power = np.minimum(power, self.pdu_model.cap_w()[self._outlet_of[comps]])
                out[:, board] = self.sim.sensor_view(t, power, comps) / volts
            return out

        return source

    def start(self) -> LiveRack:
        if self._psu is not None:               # the BMC's first readings, before it answers
            self._refresh_psus(0.0)
            self._psu_next = float(PSU_POLL_S)
        try:
            for server in self.pdus.values():
                server.start()
            if self.bmc is not None:
                self.bmc.start()
        except OSError:
            for server in self.pdus.values():
                server.stop()
            if self.bmc is not None:
                self.bmc.stop()
            raise
        self.fleet.start()
        self._t0 = time.monotonic()
        self.board.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        # the devices stop side by side: Ctrl-C under ros2 launch must end this process fast
        stops = [self.board.stop, self.fleet.stop, *(s.stop for s in self.pdus.values())]
        if self.bmc is not None:
            stops.append(self.bmc.stop)
        threads = [threading.Thread(target=stop, name="sim-stop") for stop in stops]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def __enter__(self) -> LiveRack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def inject_fault(self, spec: FaultSpec) -> FaultSpec:
        """Inject a simulated fault now or later (`RackSimulator.inject`); returns it as
        injected."""
        return self.sim.inject(spec)

    def sim_time(self) -> float:
        """Seconds of simulated time since start (= wall seconds since start)."""
        return time.monotonic() - self._t0

    def manifest(self) -> dict:
        """What the nodes need to find this rack: board link, channel map, exporter URLs,
        PDUs (name, url, host, port, unit_id, map, outlets, the allocations a reboot restores
        in W), each component's [pdu, outlet],
        each simulated BMC's chassis URL by server,
        the breaker rating and the derated budget (W), and the simulated start (Unix s), seed
        and rate, so `generate` can replay the same demand in fast mode."""
        names = self.sim.names
        cfg = self.sim.config
        return {
            "board_link": self.board.port_path,
            "board_channels": self.board.layout.channels,
            "board_rate_hz": self.board.rate_hz,
            "components": [names[c] for c in self.channel_map if c is not None and c >= 0],
            "board_index": [k for k, c in enumerate(self.channel_map)
                            if c is not None and c >= 0],
            "hosts": list(self.fleet.urls),
            "host_urls": list(self.fleet.urls.values()),
            "pdus": [{"name": name, "url": s.url, "host": s.host, "port": s.port,
                      "unit_id": s.unit_id, "map": s.map.name, "outlets": s.map.outlets,
                      "defaults_w": s.defaults_w.tolist()}
                     for name, s in self.pdus.items()],
            "pdu_outlets": {c.name: [c.pdu, c.outlet] for c in cfg.components},
            "feeds": None if self.feeds is None else {
                "names": list(self.feeds.feeds.names), "pdus": list(self.feeds.feeds.pdus),
                "breaker_w": self.feeds.feeds.breaker_w.tolist(),
                "budget_w": self.feeds.feeds.budget_w.tolist(),
                "split": self.feeds.feeds.split.tolist()},
            "bmcs": {name: self.bmc.chassis_url(name) for name in self.bmc_chassis()},
            "breaker_w": cfg.breaker_w,
            "budget_w": cfg.budget_w,
            "start_unix": cfg.start_unix,       # simulated t = 0 (fast mode replays from it)
            "seed": self.sim.seed,
            "rate_hz": self.sim.rate_hz,
        }

    def bmc_chassis(self) -> list[str]:
        """The servers with a simulated BMC (component names)."""
        return list(self._bmc_servers)

    def pdu_stats(self) -> dict:
        """The PDU model's counters (`PduModel.stats`) plus per-component throttled energy
        (J) and under-allocated time (s); empty without PDUs."""
        if self.pdu_model is None:
            return {}
        with self.pdu_lock:
            stats = self.pdu_model.stats()
            m = self.pdu_model
            stats["components"] = {
                c.name: {"throttled_j": float(m.throttled_j[i]),
                         "under_allocated_s": float(m.under_allocated_s[i]),
                         "allocation_w": float(m.allocation_w[i]),
                         "server_cap_w": (None if np.isinf(m.server_cap_w[i])
                                          else float(m.server_cap_w[i]))}
                for c, i in zip(self.sim.config.components, self._outlet_of.tolist())}
        return stats

    def write_manifest(self, path: str | Path) -> None:
        """Write `manifest()` as JSON, atomically: a reader never sees half a file."""
        path = Path(path)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temp.write_text(json.dumps(self.manifest(), indent=2))
        os.replace(temp, path)

    def _run(self) -> None:
        last = self.sim_time()
        while not self._stop.wait(self._period):
            now = self.sim_time()
            self._advance_hosts(last, now)
            self._advance_pdus(last, now)
            if self._psu is not None and now >= self._psu_next:
                t_k = PSU_POLL_S * (now // PSU_POLL_S)     # the newest poll time reached
                self._refresh_psus(t_k)
                self._psu_next = t_k + PSU_POLL_S
            last = now

    def _advance_pdus(self, t_from: float, t_to: float) -> None:
        """Serve the outlets from `t_from` to `t_to` (s) at the demand there; refresh the
        PDUs' registers."""
        dt = t_to - t_from
        if self.pdu_model is None or dt <= 0:
            return
        demand = np.zeros(self.pdu_model.n_outlets)
        demand[self._outlet_of] = self.sim.power_at(np.array([t_to]))[0]
        with self.pdu_lock:
            self.pdu_model.apply(demand, dt)
        if self.feeds is not None:
            self.feeds.advance(dt)
        for server in self.pdus.values():
            server.refresh()

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
