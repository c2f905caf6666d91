"""The sensor board's serial link behind a small interface.

`SensorPort` is what the acquisition thread needs: open, read whatever bytes arrived within a
short timeout, close. `PySerialPort` implements it with pyserial, so any pyserial URL works: a
device path (`/dev/ttyACM0`, `/dev/serial/by-id/...`, a pty), `socket://host:port`, `loop://`,
`rfc2217://...`. Failures surface as `PortUnavailable`, naming the port and the reason; the caller
decides whether to retry.
"""
from __future__ import annotations

import abc

import serial


class PortUnavailable(OSError):
    """The port could not be opened, or failed while open (cable pulled, device gone)."""

    def __init__(self, port: str, reason: str):
        super().__init__(f"serial port {port!r}: {reason}")
        self.port = port
        self.reason = reason


class SensorPort(abc.ABC):
    """A byte stream from the sensor board."""

    port: str

    @abc.abstractmethod
    def open(self) -> None:
        """Open the link; raises PortUnavailable."""

    @abc.abstractmethod
    def read(self, max_bytes: int) -> bytes:
        """Return the bytes available now or within the read timeout (possibly b'').

        Raises PortUnavailable when the link fails.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the link; safe to call more than once."""

    @property
    @abc.abstractmethod
    def is_open(self) -> bool:
        """True while the link is open."""


class PySerialPort(SensorPort):
    """`SensorPort` over pyserial's `serial_for_url`.

    Args:
        port: device path or pyserial URL.
        baudrate: line rate in bit/s (ignored by USB CDC, ptys and sockets).
        read_timeout_s: how long one `read` waits for the first byte, in seconds.
    """

    def __init__(self, port: str, baudrate: int = 3_000_000, read_timeout_s: float = 0.005):
        self.port = port
        self._baudrate = baudrate
        self._timeout = read_timeout_s
        self._serial: serial.SerialBase | None = None

    def open(self) -> None:
        self.close()
        try:
            self._serial = serial.serial_for_url(
                self.port, baudrate=self._baudrate, timeout=self._timeout,
                exclusive=True if self.port.startswith("/") else None)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise PortUnavailable(self.port, f"cannot open: {exc}") from exc

    def read(self, max_bytes: int) -> bytes:
        link = self._serial
        if link is None:
            raise PortUnavailable(self.port, "not open")
        try:
            waiting = link.in_waiting
            data = link.read(max(1, min(max_bytes, waiting)) if waiting else 1)
            if data and link.in_waiting:
                data += link.read(min(max_bytes - len(data), link.in_waiting))
            return data
        except (serial.SerialException, OSError) as exc:
            raise PortUnavailable(self.port, f"read failed: {exc}") from exc

    def close(self) -> None:
        link, self._serial = self._serial, None
        if link is not None:
            try:
                link.close()
            except (serial.SerialException, OSError):
                pass  # the device is already gone; nothing left to release

    @property
    def is_open(self) -> bool:
        return self._serial is not None and self._serial.is_open
