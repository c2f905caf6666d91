"""PDU clients behind one small interface: `PduClient`, and `ModbusPdu` with pymodbus.

A PDU is addressed by URL:
    tcp://host:port                                  Modbus TCP (port defaults to 502)
    rtu:///dev/ttyUSB0?baudrate=19200&parity=E       Modbus RTU on a serial line (pyserial
    rtu://socket://host:port?baudrate=19200          port or URL; options baudrate, parity
                                                     N/E/O, stopbits 1/2, bytesize 7/8)
and described by a register map (`rackpower_nodes.core.pdu_map`). Outlets are numbered from 1.

Every failure of the link or the device (connection refused, timeout, a Modbus exception
response, an identity mismatch) raises `PduError` naming the URL, the unit id, the table and
address and the cause; the client is then disconnected and the next `connect()` starts afresh.
What the map does not offer raises `PduCapabilityError`; bad arguments (outlet numbers outside
1..outlets, non-finite or negative watts) raise ValueError before any request is sent.
"""
from __future__ import annotations

import abc
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs

import numpy as np

from rackpower_nodes.core.params import ConfigError
from rackpower_nodes.core.pdu_map import (
    READ_LIMITS, WRITE_LIMITS, Point, RegisterMap, load_register_map, plan_blocks,
)

__all__ = ["OutletReadings", "PduCapabilityError", "PduClient", "PduError", "ModbusPdu",
           "open_pdu", "parse_pdu_url"]

_READ_FUNCTIONS = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}   # Modbus codes
_EXCEPTION_NAMES = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
                    4: "server device failure", 5: "acknowledge", 6: "server device busy",
                    10: "gateway path unavailable", 11: "gateway target failed to respond"}


class PduError(RuntimeError):
    """The PDU did not answer, answered with an error, or is not the device the map
    describes. The client is disconnected; `connect()` again to retry."""


class PduCapabilityError(RuntimeError):
    """The register map offers no way to do this (no allocation register; switching not
    allowed). A configuration matter: retrying will not help."""


@dataclass(frozen=True)
class OutletReadings:
    """Metering of some outlets, in the order asked. NaN where the map lacks a point;
    `state` is None without an outlet-state point."""

    outlets: np.ndarray          # (k,) outlet numbers, 1-based
    power_w: np.ndarray          # (k,) W
    current_a: np.ndarray        # (k,) A
    voltage_v: np.ndarray        # (k,) V
    state: np.ndarray | None     # (k,) bool, True = on


class PduClient(abc.ABC):
    """One PDU: metering, per-outlet allocations where the device takes them, switching where
    allowed. Not connected until `connect()`."""

    register_map: RegisterMap

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the link and verify the device (identity checks, outlet count); PduError."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the link (idempotent)."""

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """True between a successful `connect()` and `close()` or a failure."""

    @abc.abstractmethod
    def read_outlets(self, outlets: Sequence[int]) -> OutletReadings:
        """Power (W), current (A), voltage (V) and state of `outlets` (1-based)."""

    @property
    def can_write_allocations(self) -> bool:
        """Whether the map has a writable per-outlet allocation register."""
        return self.register_map.can_write_allocations

    @abc.abstractmethod
    def write_allocations(self, outlets: Sequence[int], watts: Sequence[float]) -> None:
        """Write per-outlet allocations (W); PduCapabilityError without an allocation
        register."""

    @abc.abstractmethod
    def read_allocations(self, outlets: Sequence[int]) -> np.ndarray:
        """(k,) allocations of `outlets`, W; PduCapabilityError without an allocation
        register."""

    @abc.abstractmethod
    def set_outlet(self, outlet: int, on: bool) -> None:
        """Switch an outlet; PduCapabilityError unless the map's switching_allowed is true."""

    def read_boot_marker(self) -> tuple[str, float] | None:
        """("boot_count", n) or ("uptime_s", s) where the device shows one, so a restart
        can be told from a reconnect; None where it does not."""
        return None

    def __enter__(self) -> PduClient:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def parse_pdu_url(url: str) -> dict:
    """Split a PDU URL (module docstring) into client settings; ConfigError when malformed."""
    expected = "expected tcp://host:port or rtu://<serial port>?baudrate=19200&parity=E"
    if not isinstance(url, str):
        raise ConfigError(f"PDU url = {url!r}: {expected}")
    if url.startswith("tcp://"):
        hostport = url[len("tcp://"):].rstrip("/")
        host, sep, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", "502")
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"PDU url = {url!r}: {expected}")
        return {"kind": "tcp", "host": host, "port": int(port)}
    if url.startswith("rtu://"):
        rest = url[len("rtu://"):]
        port, _, query = rest.rpartition("?") if "?" in rest else (rest, "", "")
        if not port:
            raise ConfigError(f"PDU url = {url!r}: {expected}")
        opts = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        allowed = {"baudrate": None, "parity": ("N", "E", "O"), "stopbits": ("1", "2"),
                   "bytesize": ("7", "8")}
        out = {"kind": "rtu", "port": port, "baudrate": 19200, "parity": "E", "stopbits": 1,
               "bytesize": 8}
        for key, value in opts.items():
            if key not in allowed:
                raise ConfigError(f"PDU url = {url!r}: unknown option {key!r}, expected "
                                  f"{', '.join(allowed)}")
            choices = allowed[key]
            if choices is None and not value.isdigit() or choices and value not in choices:
                raise ConfigError(f"PDU url = {url!r}: {key}={value!r}, expected "
                                  f"{'a number' if choices is None else ' or '.join(choices)}")
            out[key] = value if key == "parity" else int(value)
        return out
    raise ConfigError(f"PDU url = {url!r}: {expected}")


def open_pdu(url: str, register_map: RegisterMap | str, unit_id: int = 1,
             timeout_s: float = 0.5) -> PduClient:
    """A client for the PDU at `url` with `register_map` (a map, preset name or YAML path);
    not yet connected. ConfigError for a bad URL, map or unit id."""
    return ModbusPdu(url, load_register_map(register_map), unit_id, timeout_s)


class ModbusPdu(PduClient):
    """`PduClient` over Modbus TCP or RTU with pymodbus' synchronous clients; thread-safe
    (one request at a time). Reads and writes are batched into as few requests as the
    Modbus limits allow (125 registers per read, 123 per write, 2000 coils per read)."""

    def __init__(self, url: str, register_map: RegisterMap, unit_id: int = 1,
                 timeout_s: float = 0.5):
        self.url = url
        self._settings = parse_pdu_url(url)
        self.register_map = load_register_map(register_map)
        if isinstance(unit_id, bool) or not isinstance(unit_id, int) or not 0 <= unit_id <= 247:
            raise ConfigError(f"PDU {url}: unit_id = {unit_id!r}, expected 0..247")
        if not timeout_s > 0:
            raise ConfigError(f"PDU {url}: timeout_s = {timeout_s!r}, expected > 0 s")
        self.unit_id = unit_id
        self.timeout_s = float(timeout_s)
        self._client = None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"ModbusPdu({self.url!r}, map={self.register_map.name!r}, unit={self.unit_id})"

    # -- link -------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._client is not None

    def connect(self) -> None:
        with self._lock:
            self.close()
            client = self._new_client()
            if not client.connect():
                client.close()
                raise PduError(f"PDU {self.url} unit {self.unit_id}: cannot connect: "
                               f"{self._connect_cause()}")
            self._client = client
            self._verify()

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            if client is not None:
                client.close()

    def _new_client(self):
        from pymodbus.client import ModbusSerialClient, ModbusTcpClient
        from pymodbus.framer import FramerType

        s = self._settings
        if s["kind"] == "tcp":
            return ModbusTcpClient(s["host"], port=s["port"], timeout=self.timeout_s, retries=0,
                                   reconnect_delay=0)
        return ModbusSerialClient(s["port"], framer=FramerType.RTU, baudrate=s["baudrate"],
                                  parity=s["parity"], stopbits=s["stopbits"],
                                  bytesize=s["bytesize"], timeout=self.timeout_s, retries=0,
                                  reconnect_delay=0)

    def _connect_cause(self) -> str:
        s = self._settings
        if s["kind"] != "tcp":
            return f"cannot open serial port {s['port']!r} (see the pymodbus log)"
        try:
            socket.create_connection((s["host"], s["port"]), timeout=self.timeout_s).close()
        except OSError as exc:
            return exc.strerror or str(exc) or type(exc).__name__
        return "connection attempt failed"

    def _verify(self) -> None:
        """Identity checks, then the last outlet's power register must be readable."""
        m = self.register_map
        for check in m.identity:
            p = check.as_point()
            got = self._read_registers(p.table, [(p.address, p.width)])
            value = float(p.decode([got[p.address + i] for i in range(p.width)])[0])
            if not check.matches(value):
                self._fail(p.table, p.address, f"identity check {check.name}: read {value:g}, "
                           f"expected {check.expect:g} (wrong device, unit id or map "
                           f"{m.name!r}?)")
        self._read_point(m.point("outlet_power_w"), np.array([m.outlets]))

    def _where(self, table: str, address: int, count: int = 1) -> str:
        kind = "" if table in ("coil", "discrete") else " register"
        span = f"s {address}..{address + count - 1}" if count > 1 else f" {address}"
        return f"PDU {self.url} unit {self.unit_id}: {table}{kind}{span}"

    def _fail(self, table: str, address: int, cause: str, count: int = 1):
        self.close()
        raise PduError(f"{self._where(table, address, count)}: {cause}")

    def _request(self, table: str, address: int, n: int, call, *args, **kwargs):
        """One Modbus request of `n` values; any failure becomes PduError (and
        disconnects)."""
        if self._client is None:
            raise PduError(f"{self._where(table, address, n)}: not connected, call "
                           f"connect() first")
        try:
            response = call(address, *args, device_id=self.unit_id, **kwargs)
        except Exception as exc:  # noqa: BLE001 - pymodbus and pyserial raise many kinds;
            # none is swallowed: each becomes PduError naming it, chained
            self.close()
            hint = (f" (timeout {self.timeout_s:g} s)"
                    if type(exc).__name__ == "ModbusIOException" else "")
            raise PduError(f"{self._where(table, address, n)}: "
                           f"{type(exc).__name__}: {exc}{hint}") from exc
        if response.isError():
            code = getattr(response, "exception_code", None)
            self._fail(table, address, f"Modbus exception {code} "
                       f"({_EXCEPTION_NAMES.get(code, 'unknown')})", n)
        return response

    # -- reads ------------------------------------------------------------------------------
    def _read_registers(self, table: str, spans, readable=()) -> dict[int, int]:
        """{address: value} for the registers (or bits) of `spans`, batched."""
        c = self._client
        calls = {"holding": getattr(c, "read_holding_registers", None),
                 "input": getattr(c, "read_input_registers", None),
                 "coil": getattr(c, "read_coils", None),
                 "discrete": getattr(c, "read_discrete_inputs", None)}
        values: dict[int, int] = {}
        for address, n in plan_blocks(spans, READ_LIMITS[table], readable):
            r = self._request(table, address, n, calls[table], count=n)
            if r.function_code != _READ_FUNCTIONS[table]:   # pymodbus takes any read answer
                self._fail(table, address, f"answer with function code {r.function_code}, "
                           f"expected {_READ_FUNCTIONS[table]}", n)
            bits = table in ("coil", "discrete")      # bits come padded to whole bytes
            got = r.bits if bits else r.registers
            if len(got) < n or len(got) > (-(-n // 8) * 8 if bits else n):
                self._fail(table, address, f"malformed answer: {len(got)} values for "
                           f"{n} requested", n)
            values.update(zip(range(address, address + n), (int(v) for v in got[:n])))
        return values

    def _read_point(self, p: Point, outlets: np.ndarray) -> np.ndarray:
        starts = p.address_of(outlets)
        dense = [(p.address, self.register_map.outlets * p.stride)] if p.stride == p.width \
            else []
        got = self._read_registers(p.table, [(a, p.width) for a in starts.tolist()], dense)
        words = np.array([[got[a + i] for i in range(p.width)] for a in starts.tolist()])
        return words.astype(bool)[:, 0] if p.is_bits else p.decode(words)

    def read_outlets(self, outlets: Sequence[int]) -> OutletReadings:
        idx = self._outlets(outlets)
        m = self.register_map
        with self._lock:
            out = {}
            for name in ("outlet_power_w", "outlet_current_a", "outlet_voltage_v"):
                p = m.point(name)
                out[name] = (self._read_point(p, idx) if p is not None and idx.size
                             else np.full(idx.size, np.nan))
            p = m.point("outlet_state")
            state = None if p is None else (self._read_point(p, idx) if idx.size
                                            else np.zeros(0, dtype=bool))
        return OutletReadings(idx, out["outlet_power_w"], out["outlet_current_a"],
                              out["outlet_voltage_v"], state)

    def read_allocations(self, outlets: Sequence[int]) -> np.ndarray:
        p = self._allocation_point()
        idx = self._outlets(outlets)
        with self._lock:
            return self._read_point(p, idx) if idx.size else np.zeros(0)

    def read_boot_marker(self) -> tuple[str, float] | None:
        p = self.register_map.boot_point
        if p is None:
            return None
        with self._lock:
            got = self._read_registers(p.table, [(p.address, p.width)])
        return p.name, float(p.decode([got[p.address + i] for i in range(p.width)])[0])

    # -- writes -----------------------------------------------------------------------------
    def write_allocations(self, outlets: Sequence[int], watts: Sequence[float]) -> None:
        p = self._allocation_point()
        idx = self._outlets(outlets)
        w = np.asarray(watts, dtype=np.float64).reshape(-1)
        if w.size != idx.size:
            raise ValueError(f"watts: {w.size} values for {idx.size} outlets, expected one each")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"watts = {w.tolist()}: expected finite allocations >= 0 W")
        words = p.encode(w)
        regs = {int(a) + i: int(v) for a, row in zip(p.address_of(idx), words)
                for i, v in enumerate(row)}
        with self._lock:
            spans = [(a, 1) for a in sorted(regs)]
            for address, n in plan_blocks(spans, WRITE_LIMITS["holding"]):
                self._request("holding", address, n, self._call("write_registers"),
                              [regs[a] for a in range(address, address + n)])

    def set_outlet(self, outlet: int, on: bool) -> None:
        m = self.register_map
        if not m.can_switch:
            raise PduCapabilityError(
                f"PDU {self.url} (map {m.name!r}): outlet switching is not allowed "
                f"(switching_allowed: {m.switching_allowed}, outlet_state "
                f"{'writable coil' if m.point('outlet_state') else 'absent'})")
        p = m.point("outlet_state")
        idx = self._outlets([outlet])
        with self._lock:
            self._request("coil", int(p.address_of(idx)[0]), 1, self._call("write_coil"),
                          bool(on))

    # -- helpers ----------------------------------------------------------------------------
    def _call(self, name: str):
        return getattr(self._client, name, None)

    def _allocation_point(self) -> Point:
        m = self.register_map
        if not m.can_write_allocations:
            raise PduCapabilityError(
                f"PDU {self.url} (map {m.name!r}) has no writable outlet_allocation_w "
                f"register: allocations there can only be monitored")
        return m.point("outlet_allocation_w")

    def _outlets(self, outlets: Sequence[int]) -> np.ndarray:
        idx = np.asarray(outlets).reshape(-1)
        n = self.register_map.outlets
        if idx.size and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < 1
                         or idx.max() > n):
            raise ValueError(f"outlets = {idx.tolist()}: expected outlet numbers 1..{n}")
        return idx.astype(np.int64)
