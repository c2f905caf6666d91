"""The simulator's PDU: a pure model of outlets and the rack breaker, and a Modbus TCP server.

`PduModel` serves each outlet min(demand, allocation, server cap) (0 W for an outlet switched
off; the server cap is the power limit a server's BMC enforces, `sim.bmc`), counts what it
withheld, and models the breaker feeding the outlets with a trip curve:

- thermal (inverse time): with r = total served power / breaker rating, the element's heat
  h integrates (r**2 - 1) dt, clamped at 0 (it cools at the same rate below the rating); the
  breaker trips when h reaches `thermal_constant_s`. At a constant overload r the time to trip
  is thermal_constant_s / (r**2 - 1). With the default 30 s: 135 % -> 36.5 s, 200 % -> 10 s,
  255 % -> 5.4 s, and never at or below the rating. Basis: UL 489 asks a breaker to open
  within 1 h at 135 % and within 2 min at 200 % (ratings <= 30 A); IEC 60898-1 asks a
  trip within 1 h at 1.45 In and within 1-60 s at 2.55 In (In <= 32 A). The constant puts the
  curve inside those bands, towards the fast side of real thermal-magnetic breakers, so a
  simulated overload shows up within a run rather than after an hour.
- magnetic (instantaneous): r above `magnetic_multiple` (default 10, where IEC 60898-1 requires
  a type C breaker to trip instantly) trips within the step.

A trip is counted, sets `tripped` and from then on every outlet is served 0 W (the end of the
run). `SimPduServer` exposes one PDU's outlets of a model over Modbus TCP on loopback with the
`rackpower_sim` register map (config/pdu/rackpower_sim.yaml, docs/pdu.md). Like a real PDU it
takes writes from any Modbus client (there is no authentication in Modbus), and `reboot()`
plays a power cycle: connections dropped, allocations back to the power-on defaults (the
outlet ratings unless told otherwise, which may sum above the breaker) and the boot counter
one higher.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence

import numpy as np

from rackpower_nodes.core.pdu_map import Point, RegisterMap, load_register_map

__all__ = ["PduModel", "SimPduServer", "MODEL_CODE", "MAP_VERSION"]

MODEL_CODE = 0x5250      # "RP": identity.model_code of the rackpower_sim map
MAP_VERSION = 1

_log = logging.getLogger(__name__)


class PduModel:
    """Outlets fed through one breaker; pure numpy, not thread-safe (callers lock).

    Args:
        outlet_ratings_w: (n,) outlet ratings, W; the allocation of an outlet starts there.
        breaker_w: breaker rating as power, W (rated current x voltage x power factor).
        thermal_constant_s: heat at which the thermal element trips, s (see module doc).
        magnetic_multiple: instantaneous trip above this multiple of the rating.
    """

    def __init__(self, outlet_ratings_w: Sequence[float], breaker_w: float,
                 thermal_constant_s: float = 30.0, magnetic_multiple: float = 10.0):
        ratings = np.asarray(outlet_ratings_w, dtype=np.float64).reshape(-1)
        if ratings.size == 0 or not np.all(np.isfinite(ratings)) or np.any(ratings <= 0):
            raise ValueError(f"outlet_ratings_w = {ratings.tolist()}: expected one or more "
                             f"finite ratings > 0 W")
        for name, value in (("breaker_w", breaker_w), ("thermal_constant_s", thermal_constant_s),
                            ("magnetic_multiple", magnetic_multiple)):
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} = {value!r}: expected a finite number > 0")
        if magnetic_multiple <= 1.0:
            raise ValueError(f"magnetic_multiple = {magnetic_multiple!r}: expected > 1")
        self.ratings_w = ratings
        self.breaker_w = float(breaker_w)
        self.thermal_constant_s = float(thermal_constant_s)
        self.magnetic_multiple = float(magnetic_multiple)
        n = ratings.size
        self.allocation_w = ratings.copy()
        self.server_cap_w = np.full(n, np.inf)   # power limits set through the servers' BMCs
        self._limit = ratings.copy()             # min(allocation, server cap)
        self.outlet_on = np.ones(n, dtype=bool)
        self.served_w = np.zeros(n)           # served in the last step, W
        self.demand_w = np.zeros(n)           # demand in the last step, W
        self._cap = ratings.copy()
        self.reset_counters()

    @property
    def n_outlets(self) -> int:
        return self.ratings_w.size

    def reset_counters(self) -> None:
        """Zero the counters and the breaker's heat; re-close a tripped breaker."""
        n = self.ratings_w.size
        self.time_s = 0.0
        self.heat_s = 0.0                     # thermal element state, s
        self.tripped = False
        self.trips = 0
        self.trip_time_s: float | None = None
        self.demand_j = np.zeros(n)
        self.served_j = np.zeros(n)
        self.throttled_j = np.zeros(n)        # demand - served before a trip: performance lost
        # allocation here means min(outlet allocation, server cap)
        self.under_allocated_s = np.zeros(n)  # time with demand > allocation, s
        self.under_allocated_j = np.zeros(n)  # integral of max(demand - allocation, 0), J
        self.unserved_after_trip_j = 0.0      # demand while the breaker was open, J
        self.peak_ratio = 0.0                 # highest total / breaker_w seen
        self._update_cap()

    # -- control ------------------------------------------------------------------------
    def set_allocations(self, index: Sequence[int] | np.ndarray, watts) -> None:
        """Allocations (W, >= 0; 0 = no power) of outlets at 0-based `index`."""
        w = np.broadcast_to(np.asarray(watts, dtype=np.float64), np.shape(index))
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"watts = {w.tolist()}: expected finite allocations >= 0 W")
        self.allocation_w[np.asarray(index, dtype=np.int64)] = w
        self._update_cap()

    def set_server_caps(self, index: Sequence[int] | np.ndarray, watts) -> None:
        """Power limits (W, >= 0; inf = none) of the servers on outlets at 0-based `index`, as
        their BMCs enforce them: an outlet serves at most min(allocation, server cap)."""
        w = np.broadcast_to(np.asarray(watts, dtype=np.float64), np.shape(index))
        if np.any(np.isnan(w)) or np.any(w < 0):
            raise ValueError(f"watts = {w.tolist()}: expected server caps >= 0 W (inf = none)")
        self.server_cap_w[np.asarray(index, dtype=np.int64)] = w
        self._update_cap()

    def set_outlet_on(self, index: Sequence[int] | np.ndarray, on) -> None:
        """Switch outlets at 0-based `index` on or off (off serves 0 W)."""
        self.outlet_on[np.asarray(index, dtype=np.int64)] = np.asarray(on, dtype=bool)
        self._update_cap()

    def cap_w(self) -> np.ndarray:
        """(n,) the most each outlet serves now, W (0 when off or tripped)."""
        return self._cap

    def _update_cap(self) -> None:
        self._limit = np.minimum(self.allocation_w, self.server_cap_w)
        self._cap = np.where(self.outlet_on & (not self.tripped), self._limit, 0.0)

    # -- time -----------------------------------------------------------------------------
    def apply(self, demand_w: np.ndarray, dt_s: float) -> np.ndarray:
        """Serve one step of `dt_s` s at `demand_w` (n,) W; returns (n,) served W."""
        demand = np.maximum(demand_w, 0.0)
        served = np.minimum(demand, self._cap)
        self.time_s += dt_s
        self.demand_w, self.demand_j = demand, self.demand_j + demand * dt_s
        if self.tripped:
            self.served_w = served
            self.unserved_after_trip_j += float(demand.sum()) * dt_s
            return served
        over = demand - self._limit
        under = over > 0.0
        self.under_allocated_s += under * dt_s
        self.under_allocated_j += np.where(under, over, 0.0) * dt_s
        self.throttled_j += (demand - served) * dt_s
        ratio = float(served.sum()) / self.breaker_w
        self.peak_ratio = max(self.peak_ratio, ratio)
        self.heat_s = max(0.0, self.heat_s + (ratio * ratio - 1.0) * dt_s)
        if ratio > self.magnetic_multiple or self.heat_s >= self.thermal_constant_s:
            self._trip()
            served = self._cap.copy()       # all zero: the breaker opened during the step
        self.served_w = served
        self.served_j += served * dt_s
        return served

    def apply_block(self, demand_w: np.ndarray, dt_s: float) -> np.ndarray:
        """`apply` for (T, n) demand (W) at steps of `dt_s` s with the allocations held
        constant, vectorised over T (the breaker's clamped heat by the Lindley recursion
        h_t = max(h0 + S_t, S_t - min_{k<=t} S_k), S the cumulative sum of the increments).
        Same served power (T, n) and counters as T calls of `apply`."""
        demand = np.maximum(np.asarray(demand_w, dtype=np.float64), 0.0)
        if demand.ndim != 2 or demand.shape[1] != self.n_outlets:
            raise ValueError(f"demand_w shape {demand.shape}: expected (T, {self.n_outlets})")
        steps = demand.shape[0]
        if steps == 0:
            return demand.copy()
        served = np.minimum(demand, self._cap)
        live = 0 if self.tripped else steps
        if not self.tripped:
            ratio = served.sum(axis=1) / self.breaker_w
            s = np.cumsum((ratio * ratio - 1.0) * dt_s)
            heat = np.maximum(self.heat_s + s, s - np.minimum.accumulate(s))
            hit = np.flatnonzero((ratio > self.magnetic_multiple)
                                 | (heat >= self.thermal_constant_s))
            live = int(hit[0]) + 1 if hit.size else steps
            over = demand[:live] - self._limit
            under = over > 0.0
            self.under_allocated_s += under.sum(axis=0) * dt_s
            self.under_allocated_j += np.where(under, over, 0.0).sum(axis=0) * dt_s
            self.throttled_j += (demand[:live] - served[:live]).sum(axis=0) * dt_s
            self.peak_ratio = max(self.peak_ratio, float(ratio[:live].max()))
            self.heat_s = float(heat[live - 1])
            if hit.size:
                self.time_s += live * dt_s
                self._trip()
                self.time_s -= live * dt_s
                served[live - 1:] = 0.0
        self.unserved_after_trip_j += float(demand[live:].sum()) * dt_s
        self.time_s += steps * dt_s
        self.demand_j += demand.sum(axis=0) * dt_s
        self.served_j += served.sum(axis=0) * dt_s
        self.demand_w, self.served_w = demand[-1], served[-1]
        return served

    def _trip(self) -> None:
        self.tripped = True
        self.trips += 1
        self.trip_time_s = self.time_s
        self._update_cap()
        _log.warning("breaker tripped at t=%.1f s (heat %.1f s, rating %.0f W)",
                     self.time_s, self.heat_s, self.breaker_w)

    def time_to_trip_s(self, ratio: float) -> float:
        """Time to a thermal trip from cold at a constant total/breaker `ratio`, s (inf at or
        below 1; 0 above the magnetic multiple)."""
        if ratio > self.magnetic_multiple:
            return 0.0
        return self.thermal_constant_s / (ratio * ratio - 1.0) if ratio > 1.0 else float("inf")

    def stats(self) -> dict:
        """Counters as plain numbers (J, s, W): per outlet lists and rack totals."""
        return {"time_s": self.time_s, "trips": self.trips, "tripped": self.tripped,
                "trip_time_s": self.trip_time_s, "heat_s": self.heat_s,
                "peak_ratio": self.peak_ratio,
                "served_j": float(self.served_j.sum()), "demand_j": float(self.demand_j.sum()),
                "throttled_j": float(self.throttled_j.sum()),
                "under_allocated_j": float(self.under_allocated_j.sum()),
                "under_allocated_s": self.under_allocated_s.tolist(),
                "unserved_after_trip_j": self.unserved_after_trip_j}


class SimPduServer:
    """A Modbus TCP server on loopback playing one PDU: outlets `first_outlet` ..
    `first_outlet + map.outlets - 1` (0-based) of `model`.

    Metering registers show the model's last served power (W), current = power / voltage (A)
    and the voltage (V; 0 after a trip); a written allocation register sets the model's
    allocation (negative or non-finite values are refused with ILLEGAL_DATA_VALUE); a coil
    switched off serves 0 W. `update(demand_w, dt_s)` advances the model and refreshes the
    registers; where several servers share one model (one breaker feeding two PDUs), advance
    the model under `lock` and call `refresh()` on each. Runs its own asyncio loop in a thread.

    Args:
        register_map: a map with the rackpower_sim layout (RegisterMap, preset name or path).
        model: the outlets and breaker.
        host, port: where to listen; port 0 picks a free port (then `port` tells it, and a
            restart reuses it).
        unit_id: the Modbus unit (device) id served.
        voltage_v: outlet voltage, V.
        lock: shared with other servers on the same model (default: a new lock).
        framer: "socket" (Modbus TCP) or "rtu" (RTU frames over TCP, for RTU client tests).
        defaults_w: the allocations `reboot()` restores, W (one value or one per outlet;
            None: the model's outlet ratings).
        boot_count: the boot counter's value at construction (the map's `boot_count` point).
    """

    def __init__(self, register_map: RegisterMap | str = "rackpower_sim",
                 model: PduModel | None = None, host: str = "127.0.0.1", port: int = 0,
                 unit_id: int = 1, voltage_v: float = 230.0, first_outlet: int = 0,
                 lock: threading.Lock | None = None, framer: str = "socket",
                 defaults_w: float | Sequence[float] | None = None, boot_count: int = 1):
        self.map = load_register_map(register_map)
        self.model = model if model is not None else PduModel(
            np.full(self.map.outlets, 2300.0), 4600.0)
        if first_outlet < 0 or first_outlet + self.map.outlets > self.model.n_outlets:
            raise ValueError(f"first_outlet = {first_outlet}: the map's {self.map.outlets} "
                             f"outlets do not fit the model's {self.model.n_outlets}")
        sel = slice(first_outlet, first_outlet + self.map.outlets)
        defaults = self.model.ratings_w[sel] if defaults_w is None else defaults_w
        self.defaults_w = np.broadcast_to(np.asarray(defaults, dtype=np.float64),
                                          (self.map.outlets,)).copy()
        if not np.all(np.isfinite(self.defaults_w)) or np.any(self.defaults_w < 0):
            raise ValueError(f"defaults_w = {self.defaults_w.tolist()}: expected finite "
                             f"allocations >= 0 W")
        if isinstance(boot_count, bool) or not isinstance(boot_count, int) \
                or not 0 <= boot_count < 2**32:
            raise ValueError(f"boot_count = {boot_count!r}: expected an integer 0..2**32-1")
        self.boot_count = boot_count
        self._boot_t = time.monotonic()
        self._delay_s = {"read": 0.0, "write": 0.0}
        for name in ("outlet_power_w", "outlet_allocation_w", "outlet_state"):
            if self.map.point(name) is None:
                raise ValueError(f"register map {self.map.name}: point {name} missing, "
                                 f"expected the rackpower_sim layout")
        if framer not in ("socket", "rtu"):
            raise ValueError(f"framer = {framer!r}: expected 'socket' or 'rtu'")
        self.host, self._port, self.unit_id, self.framer = host, int(port), int(unit_id), framer
        self.voltage_v = float(voltage_v)
        self.lock = lock if lock is not None else threading.Lock()
        self._sel = np.arange(first_outlet, first_outlet + self.map.outlets)
        self._meter_words: dict[str, np.ndarray] = {}
        self._version = 0           # bumps when metering changes
        self._shown = -1            # version copied into the server's registers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server = None
        self.refresh()

    @property
    def port(self) -> int:
        """The TCP port (the real one after `start` when 0 was asked)."""
        return self._port

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self._port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def update(self, demand_w: np.ndarray, dt_s: float) -> np.ndarray:
        """Advance the model one step (demand for the whole model, W) and refresh the
        registers; returns the served power (W) of every model outlet."""
        with self.lock:
            served = self.model.apply(np.asarray(demand_w, dtype=np.float64), dt_s)
        self.refresh()
        return served

    def refresh(self) -> None:
        """Recompute the metering registers from the model's last step."""
        m = self.model
        with self.lock:
            power = m.served_w[self._sel]
            volts = 0.0 if m.tripped else self.voltage_v
        values = {"outlet_power_w": power,
                  "outlet_current_a": power / volts if volts else np.zeros_like(power),
                  "outlet_voltage_v": np.full(power.shape, volts)}
        words = {}
        for name, v in values.items():
            p = self.map.point(name)
            if p is not None:
                words[name] = p.encode(v)
        self._meter_words = words           # swapped whole: read by the server thread
        self._version += 1

    # -- server lifecycle -------------------------------------------------------------------
    def start(self) -> SimPduServer:
        """Listen (in a background thread); raises OSError when the port cannot be bound."""
        if self.running:
            return self
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=f"sim-pdu-{self._port}",
                                  daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._serve(), loop).result(10.0)
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5.0)
            loop.close()
            raise
        self._loop, self._thread = loop, thread
        return self

    def stop(self) -> None:
        """Close the listener and every client connection; `start` may follow."""
        loop, server = self._loop, self._server
        if loop is None:
            return
        if server is not None:
            asyncio.run_coroutine_threadsafe(server.shutdown(), loop).result(10.0)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(5.0)
        loop.close()
        self._loop = self._thread = self._server = None

    def reboot(self, down_s: float = 0.0) -> None:
        """A power cycle, as a real PDU goes through one: every connection dropped, the
        allocations back to `defaults_w`, every outlet on, the boot counter (and uptime)
        restarted; listening again after `down_s` s if it was listening before."""
        if not (np.isfinite(down_s) and down_s >= 0):
            raise ValueError(f"down_s = {down_s!r}: expected a finite number >= 0 s")
        was_running = self.running
        self.stop()
        with self.lock:
            self.model.set_allocations(self._sel, self.defaults_w)
            self.model.set_outlet_on(self._sel, True)
        self.boot_count = (self.boot_count + 1) % 2**32
        self._boot_t = time.monotonic()
        _log.info("simulated PDU on %s rebooted (boot %d): allocations back to %s W",
                  self.url, self.boot_count, np.unique(self.defaults_w).tolist())
        if down_s:
            time.sleep(down_s)
        if was_running:
            self.start()

    def set_delay(self, read_s: float = 0.0, write_s: float = 0.0) -> None:
        """Every read (write) request is answered `read_s` (`write_s`) s late: a slow or busy
        PDU. 0 to stop."""
        for name, value in (("read_s", read_s), ("write_s", write_s)):
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} = {value!r}: expected a finite number >= 0 s")
        self._delay_s = {"read": float(read_s), "write": float(write_s)}

    def __enter__(self) -> SimPduServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    async def _serve(self) -> None:
        from pymodbus.framer import FramerType
        from pymodbus.server import ModbusTcpServer

        framer = FramerType.SOCKET if self.framer == "socket" else FramerType.RTU
        self._shown = -1
        server = ModbusTcpServer(self._device(), address=(self.host, self._port), framer=framer)
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            raise OSError(f"simulated PDU: cannot listen on {self.host}:{self._port} "
                          f"(port in use?): {exc}") from None
        self._port = server.transport.sockets[0].getsockname()[1]
        self._server = server
        _log.info("simulated PDU unit %d on %s", self.unit_id, self.url)

    # -- register image -----------------------------------------------------------------------
    def _device(self):
        """A pymodbus SimDevice built from the model's current state."""
        from pymodbus.simulator import DataType, SimData, SimDevice

        regs: dict[str, list] = {"holding": [], "input": []}
        bits: dict[str, list] = {"coil": [], "discrete": []}
        outlets = np.arange(1, self.map.outlets + 1)
        with self.lock:
            alloc = self.model.allocation_w[self._sel].copy()
            on = self.model.outlet_on[self._sel].copy()
        for name, p in self.map.points.items():
            if not p.per_outlet:        # boot_count / uptime_s: one read-only value
                regs[p.table].append(SimData(p.address, values=self._device_words(p),
                                             datatype=DataType.REGISTERS, readonly=True))
                continue
            if p.is_bits:
                for addr, state in zip(p.address_of(outlets).tolist(), on.tolist()):
                    bits[p.table].append(SimData(addr, values=[bool(state)],
                                                 datatype=DataType.BITS))
                continue
            words = (p.encode(alloc) if name == "outlet_allocation_w"
                     else self._meter_words.get(name, np.zeros((outlets.size, p.width), int)))
            for addr, w in zip(p.address_of(outlets).tolist(), words.tolist()):
                regs[p.table].append(SimData(addr, values=w, datatype=DataType.REGISTERS,
                                             readonly=not p.writable))
        for check in self.map.identity:
            words = check.as_point().encode([check.expect])[0].tolist()
            regs[check.table].append(SimData(check.address, values=words,
                                             datatype=DataType.REGISTERS, readonly=True))
        empty_bits = [SimData(0, values=[False], datatype=DataType.BITS)]
        empty_regs = [SimData(0, datatype=DataType.INVALID)]
        blocks = (bits["coil"] or empty_bits, bits["discrete"] or empty_bits,
                  regs["holding"] or empty_regs, regs["input"] or empty_regs)
        return SimDevice(self.unit_id, simdata=blocks, action=self._action)

    def _device_words(self, p: Point) -> list[int]:
        """Registers of a device-wide point: the boot counter or the uptime (s)."""
        value = self.boot_count if p.name == "boot_count" else time.monotonic() - self._boot_t
        return p.encode([min(value, 2.0**32 - 1) if p.type == "uint32" else value])[0].tolist()

    async def _action(self, func_code: int, start: int, address: int, count: int,
                      registers: list[int], values) -> object:
        """pymodbus hook on every request: refresh metering before a read; apply writes of
        allocations and outlet coils to the model (refusing bad allocations)."""
        from pymodbus.constants import ExcCodes

        delay = self._delay_s["read" if values is None else "write"]
        if delay:
            await asyncio.sleep(delay)
        if func_code in (3, 4):
            table = "holding" if func_code == 3 else "input"
            if self._shown != self._version:
                self._show(registers, start, table)
            up = self.map.point("uptime_s")
            if up is not None and up.table == table:
                registers[up.address - start:up.address - start + up.width] = \
                    self._device_words(up)
        if values is None:
            return None
        try:
            if func_code in (5, 15):
                self._write_coils(address, values)
            elif func_code in (6, 16):
                self._write_registers(registers, start, address, values)
        except ValueError as exc:
            _log.warning("simulated PDU refused a write at %d: %s", address, exc)
            return ExcCodes.ILLEGAL_VALUE
        return None

    def _show(self, registers: list[int], start: int, table: str) -> None:
        version = self._version
        outlets = np.arange(1, self.map.outlets + 1)
        for name, words in self._meter_words.items():
            p = self.map.point(name)
            if p.table != table:
                continue
            for addr, w in zip(p.address_of(outlets).tolist(), words.tolist()):
                registers[addr - start:addr - start + p.width] = w
        self._shown = version

    def _outlet_index(self, p: Point, addresses: np.ndarray) -> np.ndarray:
        """0-based outlets whose value starts at `addresses` (-1 where none does)."""
        k = addresses - p.address
        ok = (k >= 0) & (k % p.stride == 0) & (k // p.stride < self.map.outlets)
        return np.where(ok, k // p.stride, -1)

    def _write_coils(self, address: int, values) -> None:
        p = self.map.point("outlet_state")
        idx = self._outlet_index(p, address + np.arange(len(values)))
        on = np.asarray(values, dtype=bool)[idx >= 0]
        with self.lock:
            self.model.set_outlet_on(self._sel[idx[idx >= 0]], on)

    def _write_registers(self, registers: list[int], start: int, address: int,
                         values) -> None:
        p = self.map.point("outlet_allocation_w")
        after = list(registers)
        after[address - start:address - start + len(values)] = values
        first = self._outlet_index(p, np.arange(address - p.width + 1, address + len(values)))
        touched = np.unique(first[first >= 0])
        if touched.size == 0:
            return
        starts = p.address_of(touched + 1) - start
        words = np.array([after[s:s + p.width] for s in starts.tolist()])
        watts = p.decode(words)
        if not np.all(np.isfinite(watts)) or np.any(watts < 0):
            raise ValueError(f"allocations {watts.tolist()} W: expected finite values >= 0")
        with self.lock:
            self.model.set_allocations(self._sel[touched], watts)
