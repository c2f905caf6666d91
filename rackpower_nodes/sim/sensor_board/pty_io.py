"""The sensor board's side of the serial link: its transmit FIFO and the pseudo-terminal.

`_OutputBuffer` queues whole frames and writes as much as the pty takes without blocking,
dropping the oldest frames when full; `_Pty` opens one raw pty pair (non-blocking master, the
slave kept open by the board), points an optional symlink at the slave and tells how many
written bytes the host has not read yet.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import select
import struct
import termios
import tty
from collections import deque

_MAX_WRITE = 1 << 16         # bytes handed to one os.write


class _OutputBuffer:
    """The board's transmit FIFO: whole frames, oldest dropped first when full."""

    def __init__(self, capacity_bytes: int):
        self.capacity = capacity_bytes
        self._entries: deque[bytes] = deque()
        self._size = 0
        self._head_sent = 0       # bytes of the first entry already written

    def __len__(self) -> int:
        return len(self._entries)

    def push(self, entry: bytes) -> int:
        """Append one frame; return how many older frames had to be dropped."""
        self._entries.append(entry)
        self._size += len(entry)
        dropped = 0
        while self._size > self.capacity and len(self._entries) > 1:
            index = 1 if self._head_sent else 0   # never cut a frame already on the wire
            victim = self._entries[index]
            del self._entries[index]
            self._size -= len(victim)
            dropped += 1
        return dropped

    def clear(self) -> int:
        """Drop everything (a partly written frame included); return the frames dropped."""
        count = len(self._entries)
        self._entries.clear()
        self._size = self._head_sent = 0
        return count

    def write_to(self, fd: int) -> tuple[int, int]:
        """Write as much as ``fd`` takes without blocking; return (bytes, frames completed)."""
        if not self._entries or not select.select([], [fd], [], 0)[1]:
            return 0, 0
        chunk, total = [], 0
        for entry in self._entries:
            chunk.append(entry)
            total += len(entry)
            if total >= _MAX_WRITE:
                break
        try:
            sent = os.write(fd, b"".join(chunk)[self._head_sent:])
        except (BlockingIOError, InterruptedError):
            return 0, 0
        return sent, self._consume(sent)

    def _consume(self, sent: int) -> int:
        done, offset = 0, self._head_sent + sent
        while self._entries and offset >= len(self._entries[0]):
            entry = self._entries.popleft()
            offset -= len(entry)
            self._size -= len(entry)
            done += 1
        self._head_sent = offset
        return done


class _Pty:
    """One pty pair: raw slave (kept open by the board), non-blocking master, optional link."""

    def __init__(self, link_path: str | None):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        flags = fcntl.fcntl(self.master, fcntl.F_GETFL)
        fcntl.fcntl(self.master, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        self.slave_name = os.ttyname(self.slave)
        self.link_path = link_path
        if link_path:
            temp = f"{link_path}.{os.getpid()}.tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            os.symlink(self.slave_name, temp)
            os.replace(temp, link_path)

    def unread_bytes(self) -> int:
        """Bytes written but not yet read by the host (line-discipline queue), or 0."""
        try:
            raw = fcntl.ioctl(self.slave, termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return 0
        return struct.unpack("i", raw)[0]

    def close(self) -> None:
        """Close both ends and remove the link if it still points at this pty."""
        if self.link_path:
            with contextlib.suppress(OSError):
                if os.readlink(self.link_path) == self.slave_name:
                    os.unlink(self.link_path)
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)
