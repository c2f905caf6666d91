"""The `main()` every rackpower node executable shares.

Initialises rclpy, builds the node (a configuration error ends the process with exit code 2 and
a message naming the key), spins it until SIGINT or SIGTERM, then shuts down in an order that
leaves every device and file in a known state:

1. the executor stops taking work (within `SIGNAL_POLL_S`) and the callbacks in flight
   finish (at most `EXECUTOR_STOP_S`);
2. the node is destroyed while the ROS context is still valid: the actuator writes its static
   split, the recorder closes its bag with its metadata, readers stop, sockets close;
3. the context is shut down;
4. the process ends (:func:`end_process`) without the interpreter's slow module teardown.

A shutdown still running `SHUTDOWN_REPORT_S` after it began prints the stack of every thread
to stderr (faulthandler, which needs neither the GIL nor the main thread): a shutdown that
hangs, in Python or in the ROS client library, says where before `ros2 launch` kills it. So
does an executor that has not come back to the spinning loop for about `STALL_REPORT_S` (a
callback or the executor itself stuck: the signal handlers, which run on that thread between
two waits, could then never run, and SIGINT and SIGTERM would go unanswered).

A shutdown is also bounded (:class:`ShutdownDeadline`), since it ignores SIGINT and SIGTERM
and would otherwise hang until a SIGKILL. Step 2 splits in two: each node's own stop (its
`destroy_node` override), then rclpy's destruction of its DDS entities, which every override
calls last. While the own stops run, the process ends after `SHUTDOWN_LIMIT_S` with
`EXIT_SHUTDOWN_HUNG` and an error naming the node (or by SIGALRM after `SHUTDOWN_KILL_S`
should a thread hold the GIL). Once they are done, every device and file is in its safe
state and what is left is the ROS client library's: rclpy and Fast DDS get `TEARDOWN_LIMIT_S`
(their stacks are printed a second before it), then the process ends with exit code 0 (1
after a crash in a callback), most often before `ros2 launch` escalates to SIGTERM (5 s after
its SIGINT) and always before its SIGKILL.
That bound is kept by a libc timer too, as the Fast DDS 3.2 of the ROS wheels can deadlock in
its discovery (README) while rclpy destroys a publisher with the GIL held.

A node run with `threads=1` spins on rclpy's C++ events executor (`EventsExecutor`): one
callback at a time, as the single-threaded executor, without rebuilding a wait set in Python
for every callback (the classic executors spent 40-55 % of a busy node's CPU there). Such a
node keeps every blocking call (network, devices, fits) off its callbacks, on threads it owns.
`RACKPOWER_EXECUTOR=classic` in the environment selects rclpy's Python SingleThreadedExecutor
instead (the events executor is still marked experimental upstream); any other value than
`events` or `classic` stops the node with exit code 2. `threads` > 1 always means a
MultiThreadedExecutor.

The signals are handled here, not by rclpy (`SignalHandlerOptions.NO`): rclpy's handler shuts
the context down at once, so callbacks still running publish into a dead context (RCLError),
and a second Ctrl-C (a terminal sends SIGINT to the whole process group, and `ros2 launch`
sends its own SIGINT on top) raised KeyboardInterrupt inside the actuator's safe write or the
recorder's bag close. Here the first SIGINT/SIGTERM requests the shutdown and every later one
is only counted until the process exits: the safe work is never interrupted.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import faulthandler
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import NoReturn

import rclpy
from rclpy.executors import (
    ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor)
from rclpy.experimental import EventsExecutor
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from rackpower_nodes.core.params import ConfigError
from rackpower_nodes.nodes.common import ParameterError, reject_undeclared_overrides

EXIT_BAD_CONFIG = 2
EXIT_SHUTDOWN_HUNG = 3       # a shutdown that hung before the nodes' own stops were done
EXECUTOR_STOP_S = 1.0        # how long callbacks in flight may take to finish at shutdown, s
SIGNAL_POLL_S = 0.1          # longest wait of the executor before a signal is looked at, s
SHUTDOWN_REPORT_S = 10.0     # a shutdown running this long prints every thread's stack, s
SHUTDOWN_LIMIT_S = 20.0      # ... and this long, the nodes' own stop not done, ends it, s
SHUTDOWN_KILL_S = 30.0       # ... and this long ends it by SIGALRM, without Python, s
TEARDOWN_LIMIT_S = 3.0       # the ROS library's teardown after the nodes' own stop, at most, s
STALL_REPORT_S = 10.0        # so does an executor that has not returned for about this long, s
STALL_REARM_S = 2.0          # how often the spinning loop pushes that report back, s
SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXECUTOR_ENV = "RACKPOWER_EXECUTOR"
EXECUTORS = ("events", "classic")


def executor_kind() -> str:
    """The single-threaded executor `RACKPOWER_EXECUTOR` asks for: 'events' (the default) or
    'classic'; ConfigError naming the variable for anything else."""
    kind = os.environ.get(EXECUTOR_ENV, "events").strip() or "events"
    if kind not in EXECUTORS:
        raise ConfigError(f"{EXECUTOR_ENV}={kind!r}: expected one of {', '.join(EXECUTORS)}")
    return kind


def make_executor(threads: int):
    """A MultiThreadedExecutor for `threads` > 1, else the executor :func:`executor_kind`
    names (rclpy must be initialised)."""
    if threads > 1:
        return MultiThreadedExecutor(num_threads=threads)
    return EventsExecutor() if executor_kind() == "events" else SingleThreadedExecutor()


class ShutdownRequest:
    """Turns SIGINT/SIGTERM into a request to shut down; later signals are counted, never
    raised. Call :meth:`install` from the main thread (Python delivers signals there)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signals: list[str] = []

    def install(self) -> bool:
        """Handle SIGINT and SIGTERM; False (nothing installed) outside the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for sig in SHUTDOWN_SIGNALS:
            signal.signal(sig, self._on_signal)
        return True

    def _on_signal(self, signum: int, _frame) -> None:
        self.signals.append(signal.Signals(signum).name)
        self.event.set()

    def ignore_from_now(self) -> None:
        """Ignore SIGINT/SIGTERM outright (the shutdown is done): the interpreter restores the
        default handlers while it exits, so a late Ctrl-C would otherwise kill it (-2)."""
        if threading.current_thread() is threading.main_thread():
            for sig in SHUTDOWN_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)

    @property
    def reason(self) -> str:
        return self.signals[0] if self.signals else "the executor stopped"

    def ignored(self) -> list[str]:
        return self.signals[1:]


class _Sigevent(ctypes.Structure):
    """Linux's `struct sigevent` (64 bytes) for a SIGEV_THREAD timer."""
    _fields_ = [("value", ctypes.c_void_p), ("signo", ctypes.c_int), ("notify", ctypes.c_int),
                ("function", ctypes.c_void_p), ("attributes", ctypes.c_void_p),
                ("pad", ctypes.c_int * 8)]


class _Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]


def exit_later_without_python(delay_s: float, code: int) -> None:
    """A POSIX timer whose expiry runs `_exit(code)` on a thread of libc's own (SIGEV_THREAD:
    the function gets the timer's `sigval`, here the code): it ends the process even while a
    thread holds the GIL in a C call that never returns, as rclpy's destruction of DDS
    entities does in a deadlocked Fast DDS. OSError when the timer cannot be made."""
    libc = ctypes.CDLL(None, use_errno=True)
    event = _Sigevent(value=code, notify=2,                         # SIGEV_THREAD
                      function=ctypes.cast(libc._exit, ctypes.c_void_p).value)
    timer = ctypes.c_void_p()
    if libc.timer_create(1, ctypes.byref(event), ctypes.byref(timer)) != 0:  # CLOCK_MONOTONIC
        raise OSError(ctypes.get_errno(), "timer_create")
    sec = int(delay_s)
    when = (_Timespec * 2)(_Timespec(0, 0), _Timespec(sec, int((delay_s - sec) * 1e9)))
    if libc.timer_settime(timer, 0, ctypes.byref(when), None) != 0:
        raise OSError(ctypes.get_errno(), "timer_settime")


class ShutdownDeadline:
    """Bounds a shutdown. Until the nodes' own stop is done (:meth:`nodes_stopped`), a daemon
    thread ends the process `limit_s` after the start with EXIT_SHUTDOWN_HUNG, and SIGALRM's
    default action `kill_s` after it (a thread holding the GIL stops every Python thread).
    From then on, what is left is the ROS client library's teardown: it gets `teardown_s`,
    its stacks are printed a second before, and the process then ends with `code_if_safe`
    (the thread, with an error naming `step`; a libc timer half a second later if the GIL is
    held, :func:`exit_later_without_python`). The process ending is what stops them all."""

    def __init__(self, name: str, limit_s: float | None = None, kill_s: float | None = None,
                 teardown_s: float | None = None) -> None:
        self.name = name
        self.limit_s = SHUTDOWN_LIMIT_S if limit_s is None else limit_s
        self.kill_s = SHUTDOWN_KILL_S if kill_s is None else kill_s
        self.teardown_s = TEARDOWN_LIMIT_S if teardown_s is None else teardown_s
        self.step = "stopping the executor"
        self.safe, self.code_if_safe = False, 0
        self.deadline = time.monotonic() + self.limit_s
        self._moved = threading.Event()

    def start(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(max(1, math.ceil(self.kill_s)))
        threading.Thread(target=self._watch, name="shutdown-deadline", daemon=True).start()

    def nodes_stopped(self, step: str) -> None:
        """Every node's own stop is done (devices and files in their safe state); what is
        left, `step`, is the ROS client library's: it may end with `code_if_safe`."""
        self.step, self.safe = step, True
        signal.alarm(0)
        faulthandler.dump_traceback_later(max(0.1, self.teardown_s - 1.0), exit=False)
        try:
            exit_later_without_python(self.teardown_s + 0.5, self.code_if_safe)
        except OSError as exc:                # the Python thread still bounds it
            print(f"[WARN] [{self.name}]: no shutdown timer: {exc}", file=sys.stderr)
        self.deadline = time.monotonic() + self.teardown_s
        self._moved.set()

    def _watch(self) -> None:
        while (left := self.deadline - time.monotonic()) > 0:
            self._moved.wait(left)
            self._moved.clear()
        code = self.code_if_safe if self.safe else EXIT_SHUTDOWN_HUNG
        what = ("the nodes' own stop is done: their devices and files are in their safe state"
                if self.safe else "the safe state is not confirmed")
        took = self.teardown_s if self.safe else self.limit_s
        try:
            sys.stderr.write(f"[ERROR] [{self.name}]: {self.step} still runs after {took:g} s; "
                             f"{what}; ending the process (exit {code})\n")
            sys.stderr.flush()
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        os._exit(code)


@contextlib.contextmanager
def _marking_the_entities(deadline: ShutdownDeadline, last: Node):
    """While the nodes are destroyed, rclpy's `Node.destroy_node` (what every node's own
    `destroy_node` calls last, after its own stop) first tells `deadline` which node's DDS
    entities go; for the `last` node, that the nodes' own stops are all done."""
    original = Node.destroy_node

    def destroy_entities(node: Node) -> None:
        step = f"destroying the DDS entities of {node.get_name()}"
        if node is last:
            deadline.nodes_stopped(step)
        else:
            deadline.step = step
        original(node)

    Node.destroy_node = destroy_entities
    try:
        yield
    finally:
        Node.destroy_node = original


def run_node(factory: Callable[[], Node], name: str, args=None, threads: int = 1) -> NoReturn:
    """The node executable's whole life: run the node made by `factory` until SIGINT/SIGTERM
    (`threads` > 1 uses a MultiThreadedExecutor), shut down in order, and end the process
    with exit code 0, or EXIT_BAD_CONFIG. A crash in a callback ends it with its traceback
    (exit code 1) once the node is destroyed."""
    run_nodes([factory], name, args, threads)


def run_nodes(factories: Sequence[Callable[[], Node]], name: str, args=None,
              threads: int = 1) -> NoReturn:
    """:func:`run_node` for several nodes in this one process and one executor (the composed
    executable): they are built in the order given (a configuration error in any destroys
    those built and exits EXIT_BAD_CONFIG) and destroyed in the same order at shutdown."""
    request = ShutdownRequest()
    request.install()
    try:
        code = _run(factories, name, args, threads, request)
    finally:
        request.ignore_from_now()
    end_process(code)


def end_process(code: int) -> NoReturn:
    """End the process once everything it holds is released: run the atexit handlers (Python
    and rcl logging are flushed and closed), flush Python's and C's stdio, then exit without
    tearing the interpreter's modules down one by one, which costs about 0.7 s of CPU with
    torch loaded (the predictor) and gains nothing after an orderly shutdown."""
    atexit._run_exitfuncs()
    faulthandler.cancel_dump_traceback_later()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):     # a closed or broken pipe: nothing left to flush
            pass
    ctypes.CDLL(None).fflush(None)        # rcutils writes log lines through C stdio
    os._exit(code)


def _run(factories: Sequence[Callable[[], Node]], name: str, args, threads: int,
         request: ShutdownRequest) -> int:
    try:
        executor_kind()
    except ConfigError as exc:
        print(f"{name}: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    with rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO):
        nodes: list[Node] = []
        try:
            for factory in factories:
                nodes.append(factory())
                reject_undeclared_overrides(nodes[-1])   # a mistyped key must not pass silently
        except (ConfigError, ParameterError) as exc:
            for node in nodes:
                node.destroy_node()
            print(f"{name}: invalid configuration: {exc}", file=sys.stderr)
            return EXIT_BAD_CONFIG
        executor = make_executor(threads)
        for node in nodes:
            executor.add_node(node)
        failure = _spin_until_signal(executor, nodes[0], request)
        faulthandler.dump_traceback_later(SHUTDOWN_REPORT_S, exit=False)
        deadline = ShutdownDeadline(name)
        deadline.code_if_safe = 0 if failure is None else 1
        deadline.start()
        why = f"a callback failed: {failure!r}" if failure is not None else request.reason
        for node in nodes:
            node.get_logger().info(f"shutting down ({why})")
        if not _stop_executor(executor):
            nodes[0].get_logger().warning(
                f"callbacks still running {EXECUTOR_STOP_S:g} s after {request.reason}; "
                "destroying the node anyway")
        with _marking_the_entities(deadline, nodes[-1]):
            for node in nodes:
                deadline.step = f"stopping the node {node.get_name()}"
                node.destroy_node()
        if deadline.safe:
            deadline.step = "shutting the ROS context down"
        else:                                 # a node without rclpy's destroy_node at its end
            deadline.nodes_stopped("shutting the ROS context down")
    deadline.step = "ending the process"
    if request.ignored():
        get_logger(name).info(
            f"ignored {', '.join(request.ignored())} while shutting down (the shutdown "
            "completes first)")
    if failure is not None:
        raise failure                     # a crash in a callback: a traceback, exit 1
    return 0


def _spin_until_signal(executor, node: Node, request: ShutdownRequest) -> Exception | None:
    """Spin in this (the main) thread, so a single-threaded node's callbacks and its
    destruction share one thread (the recorder's sqlite3 bags require it), until a shutdown
    signal: the handler runs between two waits of at most SIGNAL_POLL_S. A callback's
    exception ends the spinning and is returned, to be raised once the node is destroyed.
    The stall report is pushed back every STALL_REARM_S while the executor keeps returning."""
    armed = -STALL_REARM_S
    try:
        while not request.event.is_set() and node.context.ok():
            now = time.monotonic()
            if now - armed >= STALL_REARM_S:
                faulthandler.dump_traceback_later(STALL_REPORT_S, exit=False)
                armed = now
            executor.spin_once(timeout_sec=SIGNAL_POLL_S)
    except ExternalShutdownException:
        pass
    except Exception as exc:              # noqa: BLE001 (raised after the orderly shutdown)
        return exc
    return None


def _stop_executor(executor) -> bool:
    """Shut the executor down, waiting at most EXECUTOR_STOP_S for callbacks still running
    on its worker threads; True when it stopped in time."""
    stopper = threading.Thread(target=executor.shutdown, name="executor-shutdown",
                               kwargs={"timeout_sec": EXECUTOR_STOP_S}, daemon=True)
    stopper.start()
    stopper.join(EXECUTOR_STOP_S)
    return not stopper.is_alive()
