"""The simulator's PDU on the network: `SimPduServer`, a Modbus TCP server on loopback.

`SimPduServer` exposes one PDU's outlets of a model over Modbus TCP on loopback with the
`rackpower_sim` register map (config/pdu/rackpower_sim.yaml, docs/pdu.md). Like a real PDU it
takes writes from any Modbus client (there is no authentication in Modbus), and `reboot()`
plays a power cycle: connections dropped, allocations back to the power-on defaults (the
outlet ratings unless told otherwise, which may sum above the breaker) and the boot counter
one higher.

The model (:class:`~rackpower_nodes.sim.pdu.model.PduModel`) may be shared by several servers
under one lock; pymodbus serves on the server's own asyncio loop in a thread.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence

import numpy as np

from rackpower_nodes.core.pdu_map import Point, RegisterMap, load_register_map
from rackpower_nodes.sim.pdu.model import PduModel

MODEL_CODE = 0x5250      # "RP": identity.model_code of the rackpower_sim map
MAP_VERSION = 1

_log = logging.getLogger(__name__)


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
