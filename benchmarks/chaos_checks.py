"""What `bench_chaos.py` measures: the devices read directly, the graph's own signals, the bags.

- `DeviceChecker` reads every component's outlet allocation register over Modbus TCP (the
  project's `ModbusPdu`) and every server's BMC power limit over Redfish (`RedfishPowerCap`,
  HTTP Basic, so a BMC reboot that drops sessions does not blind it) every 0.1 s, and keeps
  per sample the device-held power of each component: min(outlet register, BMC limit), the
  enforcement rule of docs/power-caps.md, W (NaN where a device did not answer).
- `GraphWatcher` subscribes like any consumer to power_samples, power_forecast,
  host_telemetry, power_allocation and /diagnostics and keeps arrival times (monotonic s)
  and what detection needs (modes, the actuator's per-device counters, the sensor's
  discarded bytes).
- `bag_stamps` reads the recorder's bags with rosbags' AnyReader: power_samples batches as
  (first-sample stamp, span), Unix s.
- `over_budget_windows` turns the samples into the windows with the held sum above budget.
"""
from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rackpower_nodes.drivers.bmc import RedfishPowerCap
from rackpower_nodes.drivers.pdu import PduError, open_pdu

CHECK_PERIOD_S = 0.1
TOLERANCE_W = 0.5          # float32 registers and whole-watt BMC limits: equal within this


@dataclass
class Sample:
    """One checker pass: when (monotonic s), outlet registers and BMC limits (W, NaN where
    unread, inf = no BMC limit / no BMC) per component, in `DeviceChecker.names` order."""

    t: float
    outlet_w: np.ndarray
    bmc_w: np.ndarray

    @property
    def total_w(self) -> float:
        """The device-held sum, W (NaN when a PDU did not answer)."""
        return float(np.minimum(self.outlet_w, self.bmc_w).sum())


class DeviceChecker:
    """Reads the simulator's PDUs and BMCs every `CHECK_PERIOD_S` in a thread of its own.

    Args:
        manifest: `rackpower-sim live --manifest` (PDU URLs and maps, BMC chassis URLs).
        names, outlets: the components and their (pdu, outlet) from the actuator's config.
        username, password: the BMCs' account.
    """

    def __init__(self, manifest: dict, names: list[str], outlets: list[tuple[str, int]],
                 username: str, password: str):
        self.names, self.outlets = list(names), list(outlets)
        pdus = {p["name"]: p for p in manifest["pdus"]}
        self._pdus = {}
        for name, p in pdus.items():
            mine = [i for i, (pdu, _) in enumerate(outlets) if pdu == name]
            self._pdus[name] = (open_pdu(p["url"], p["map"], p["unit_id"], timeout_s=0.5),
                                np.array(mine), np.array([outlets[i][1] for i in mine]))
        self.defaults_w = np.full(len(names), np.nan)
        for i, (pdu, outlet) in enumerate(outlets):
            self.defaults_w[i] = pdus[pdu]["defaults_w"][outlet - 1]
        self._bmcs = {names.index(c): RedfishPowerCap(url, username=username, password=password,
                                                      auth="basic", timeout_s=1.0)
                      for c, url in manifest["bmcs"].items() if c in names}
        self.bmc_names = [c for c in manifest["bmcs"] if c in names]
        self.samples: list[Sample] = []
        self.read_failures = 0
        self.cycle_s: list[float] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="checker")
        self._thread = threading.Thread(target=self._run, name="checker", daemon=True)

    def start(self) -> DeviceChecker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10.0)
        self._pool.shutdown(wait=True)
        for client, _, _ in self._pdus.values():
            client.close()
        for cap in self._bmcs.values():
            cap.close()

    def _read(self, client, outlets) -> np.ndarray:
        """Allocations of `outlets` (W); one reconnect on failure; NaN when still unread."""
        for attempt in (0, 1):
            try:
                if not client.connected:
                    client.connect()
                return np.asarray(client.read_allocations(outlets), dtype=np.float64)
            except PduError:        # BmcError is one too
                client.close()
                if attempt:
                    self.read_failures += 1
        return np.full(len(outlets), np.nan)

    def read_once(self) -> Sample:
        n = len(self.names)
        outlet, bmc = np.full(n, np.nan), np.full(n, np.inf)
        jobs = {("pdu", name): self._pool.submit(self._read, client, nums)
                for name, (client, _, nums) in self._pdus.items()}
        jobs.update({("bmc", i): self._pool.submit(self._read, cap, [1])
                     for i, cap in self._bmcs.items()})
        t = time.monotonic()
        for (kind, key), job in jobs.items():
            got = job.result()
            if kind == "pdu":
                outlet[self._pdus[key][1]] = got
            else:
                bmc[key] = got[0]
        return Sample(t, outlet, bmc)

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            began = time.monotonic()
            self.samples.append(self.read_once())
            self.cycle_s.append(time.monotonic() - began)
            next_t = max(next_t + CHECK_PERIOD_S, time.monotonic())
            self._stop.wait(max(0.0, next_t - time.monotonic()))


@dataclass
class Window:
    start: float           # monotonic s of the first sample above the budget
    end: float             # monotonic s of the first sample back within it (or the last)
    peak_w: float

    @property
    def length_s(self) -> float:
        return self.end - self.start


def over_budget_windows(samples: list[Sample], budget_w: float) -> list[Window]:
    """Windows with the device-held sum above `budget_w` (+ TOLERANCE_W); a sample with an
    unread device counts as above only if what was read already exceeds the budget."""
    out: list[Window] = []
    cur: Window | None = None
    for s in samples:
        total = float(np.nansum(np.minimum(s.outlet_w, s.bmc_w)))
        if total > budget_w + TOLERANCE_W:
            if cur is None:
                cur = Window(s.t, s.t, total)
            cur.peak_w = max(cur.peak_w, total)
        elif cur is not None and not np.isnan(s.outlet_w).any():
            cur.end = s.t
            out.append(cur)
            cur = None
    if cur is not None:
        cur.end = samples[-1].t
        out.append(cur)
    return out


@dataclass
class GraphWatcher:
    """Arrival times (monotonic s) of what the graph publishes, and its detection signals."""

    # power_samples: arrival (monotonic s), header stamp (Unix s and integer ns)
    samples: list[tuple[float, float, int]] = field(default_factory=list)
    forecasts: list[float] = field(default_factory=list)
    telemetry: list[float] = field(default_factory=list)
    allocations: list[tuple[float, str, str, bool]] = field(default_factory=list)
    # status name -> [(t, level, message, values)]
    diagnostics: dict[str, list[tuple[float, int, str, dict]]] = field(default_factory=dict)

    def attach(self, node, namespace: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        from rackpower.msg import HostTelemetry, PowerAllocation, PowerForecast, PowerSamples
        from rackpower_nodes.nodes.common import forecast_qos, latched_qos, samples_qos

        node.create_subscription(PowerSamples, f"{namespace}/power_samples", self._on_samples,
                                 samples_qos(0.25))
        node.create_subscription(PowerForecast, f"{namespace}/power_forecast",
                                 lambda m: self.forecasts.append(time.monotonic()),
                                 forecast_qos())
        node.create_subscription(HostTelemetry, f"{namespace}/host_telemetry",
                                 lambda m: self.telemetry.append(time.monotonic()),
                                 samples_qos(2.0))
        node.create_subscription(PowerAllocation, f"{namespace}/power_allocation",
                                 self._on_allocation, latched_qos())
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)

    def _on_samples(self, msg) -> None:
        sec, nsec = msg.header.stamp.sec, msg.header.stamp.nanosec
        self.samples.append((time.monotonic(), sec + nsec * 1e-9, sec * 10**9 + nsec))

    def _on_allocation(self, msg) -> None:
        self.allocations.append((time.monotonic(), msg.mode, msg.mode_reason,
                                 bool(msg.pdu_written)))

    def _on_diagnostics(self, msg) -> None:
        t = time.monotonic()
        for st in msg.status:
            level = st.level[0] if isinstance(st.level, bytes) else int(st.level)
            values = {kv.key: kv.value for kv in st.values}
            self.diagnostics.setdefault(st.name, []).append((t, level, st.message, values))

    # -- queries ------------------------------------------------------------------------------
    def first_allocation(self, t0: float, t1: float, pred) -> float | None:
        return next((t for t, mode, reason, written in self.allocations
                     if t0 <= t < t1 and pred(mode, reason, written)), None)

    def statuses(self, suffix: str) -> list[tuple[float, int, str, dict]]:
        """Every status whose name ends with `suffix`, in arrival order."""
        out = [e for name, events in list(self.diagnostics.items()) if name.endswith(suffix)
               for e in events]
        return sorted(out, key=lambda e: e[0])

    def counter_rise(self, suffix: str, keys: tuple[str, ...], t0: float, t1: float,
                     not_ok: bool = False) -> float | None:
        """First time in [t0, t1) a status named ...`suffix` shows one of `keys` above its
        value before t0 (or, with `not_ok`, a level other than OK)."""
        before: dict[str, float] = {}
        for t, level, _, values in self.statuses(suffix):
            nums = {k: _num(values.get(k)) for k in keys}
            if all(math.isnan(v) for v in nums.values()) and not (not_ok and t >= t0):
                continue
            if t < t0:
                before = {k: v for k, v in nums.items() if not math.isnan(v)}
                continue
            if t >= t1:
                return None
            if not_ok and level != 0:
                return t
            if any(not math.isnan(v) and v > before.get(k, 0.0) for k, v in nums.items()):
                return t
        return None

    def first_after(self, times: list[float], t0: float) -> float | None:
        return next((t for t in times if t >= t0), None)


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def bag_stamps(folder: Path, topic: str) -> tuple[np.ndarray, np.ndarray, set[int],
                                                  list[str]]:
    """power_samples in every bag under `folder`: first-sample stamps and batch spans in Unix
    s (sorted), the stamps as integer ns, and the bags that could not be read (reasons)."""
    from rosbags.highlevel import AnyReader, AnyReaderError

    from rackpower_nodes.sources.bags import message_typestore

    store, stamps, spans, ns, broken = message_typestore(), [], [], set(), []
    for bag in sorted(p for p in folder.iterdir() if p.is_dir()):
        try:
            with AnyReader([bag], default_typestore=store) as reader:
                conns = [c for c in reader.connections if c.topic == topic]
                for conn, _, raw in reader.messages(connections=conns):
                    msg = reader.deserialize(raw, conn.msgtype)
                    sec, nsec = msg.header.stamp.sec, msg.header.stamp.nanosec
                    stamps.append(sec + nsec * 1e-9)
                    ns.add(sec * 10**9 + nsec)
                    spans.append(msg.sample_count * msg.sample_period_s)
        except (AnyReaderError, OSError, ValueError, KeyError) as exc:
            broken.append(f"{bag.name}: {exc}")
    order = np.argsort(stamps)
    return np.asarray(stamps)[order], np.asarray(spans)[order], ns, broken


def gaps(stamps: np.ndarray, spans: np.ndarray, min_gap_s: float) -> list[tuple[float, float]]:
    """(end of one batch, start of the next) wherever more than `min_gap_s` s lie between."""
    if stamps.size < 2:
        return []
    ends = stamps[:-1] + spans[:-1]
    hole = stamps[1:] - ends
    return [(float(a), float(b)) for a, b, h in zip(ends, stamps[1:], hole) if h > min_gap_s]


def overlap_s(a: float, b: float, windows: list[tuple[float, float]]) -> float:
    """Seconds of [a, b] covered by the union of `windows`."""
    cut = sorted((max(a, w0), min(b, w1)) for w0, w1 in windows if w1 > a and w0 < b)
    total, reach = 0.0, a
    for w0, w1 in cut:
        if w1 > reach:
            total += w1 - max(w0, reach)
            reach = w1
    return total
