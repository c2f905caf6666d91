"""The ``rackpower-board-sim`` command (also ``sensor_board_sim``): a sensor board on a pty.

It prints the port path the host opens, runs the emulator with the chosen waveform, faults
and cable pulls until the duration ends or SIGINT/SIGTERM arrives, then prints one stats line.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence

from rackpower_nodes.core.frame_codec import FrameLayout
from rackpower_nodes.sim.sensor_board.emulator import FaultConfig, SensorBoardEmulator
from rackpower_nodes.sim.sensor_board.sources import (
    Source,
    _channel_levels,
    constant_source,
    sine_source,
    steps_source,
)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="rackpower-board-sim",
                                 description="Emulate the rack current-sensor board on a pty.")
    ap.add_argument("--link", default="/tmp/rackpower_board",
                    help="symlink to the pty slave that the host opens (default %(default)s)")
    ap.add_argument("--channels", type=int, default=64, help="ADC channels (1..1024)")
    ap.add_argument("--rate", type=float, default=1000.0, help="frames per second")
    ap.add_argument("--format", choices=("int16", "int32"), default="int16")
    ap.add_argument("--scale", type=float, default=0.01, help="A per ADC count")
    ap.add_argument("--waveform", choices=("sine", "steps", "constant"), default="sine")
    ap.add_argument("--amps", type=float, default=2.0, help="base current level in A")
    ap.add_argument("--seed", type=int, default=None, help="fault RNG seed")
    ap.add_argument("--corrupt-prob", type=float, default=0.0)
    ap.add_argument("--drop-prob", type=float, default=0.0)
    ap.add_argument("--garbage-prob", type=float, default=0.0)
    ap.add_argument("--unplug-every", type=float, default=0.0, metavar="S",
                    help="pull the cable every S seconds (0 = never)")
    ap.add_argument("--unplug-for", type=float, default=1.0, metavar="S",
                    help="seconds the cable stays pulled")
    ap.add_argument("--duration", type=float, default=0.0, metavar="S",
                    help="run time in s (0 = until SIGINT/SIGTERM)")
    ap.add_argument("--wall-clock", action="store_true",
                    help="stamp frames with µs since the Unix epoch")
    return ap.parse_args(argv)


def _make_source(args: argparse.Namespace) -> Source:
    if args.waveform == "constant":
        return constant_source(_channel_levels(args.channels, args.amps))
    if args.waveform == "steps":
        return steps_source(args.channels, args.amps, args.amps / 2)
    return sine_source(args.channels, args.amps, args.amps / 4)


def _run_until(emulator: SensorBoardEmulator, args: argparse.Namespace,
               done: threading.Event) -> None:
    """Wait for ``done`` or the duration, pulling the cable on the configured schedule."""
    end = time.monotonic() + args.duration if args.duration > 0 else float("inf")
    every = args.unplug_every if args.unplug_every > 0 else float("inf")
    next_pull = time.monotonic() + every
    while not done.is_set() and time.monotonic() < end:
        done.wait(min(1.0, max(0.0, min(end, next_pull) - time.monotonic())))
        if time.monotonic() >= next_pull and not done.is_set():
            emulator.unplug()
            done.wait(args.unplug_for)
            emulator.replug()
            next_pull = time.monotonic() + every


def main(argv: Sequence[str] | None = None) -> int:
    """``rackpower-board-sim``: print the port path, run, print a stats line; exit status."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        layout = FrameLayout(args.channels, args.format)
        faults = FaultConfig(args.corrupt_prob, args.drop_prob, args.garbage_prob,
                             seed=args.seed)
        emulator = SensorBoardEmulator(layout, args.rate, _make_source(args), args.scale,
                                       link_path=args.link or None, faults=faults,
                                       board_clock="wall" if args.wall_clock else "monotonic")
    except ValueError as exc:
        print(f"rackpower-board-sim: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with emulator:
        print(emulator.port_path, flush=True)
        _run_until(emulator, args, done)
    stats = " ".join(f"{k}={v}" for k, v in dataclasses.asdict(emulator.stats).items())
    print(f"stats: {stats}", flush=True)
    return 0
