"""``rackpower-sim``: generate simulated rack data fast, and plot it.

    rackpower-sim fast --hours 24 --seed 1 --out DIR [--config config/rack_sim.yaml |
                       --preset office|ai|mixed] [--rate-hz 10] [--png day.png]
                       [--fault KIND:COMPONENT:ONSET_H[:GROWTH_H[:MAGNITUDE]] ...]
    rackpower-sim plot --data DIR --out day.png
    rackpower-sim live --link /tmp/rackpower_rack_01_board --exporter-base-port 9101
                       [--pdu-base-port 5020 | --no-pdus] [--pdu-map rackpower_sim]
                       [--bmc-port 5080 | --no-bmcs] [--bmc-api alternate]
                       [--control /tmp/rack.sock]
                       [--fault KIND:COMPONENT:ONSET_S[:GROWTH_S[:MAGNITUDE]] ...]

``fast`` writes ``DIR/rack_sim.npz`` and ``DIR/rack_sim.json`` (layout in
:mod:`rackpower_nodes.sim.rack_sim`); ``plot`` draws per-component power, the rack total and
the breaker budget over the simulated span. ``live`` plays the rack's hardware in real time: the
sensor board on a pty, one node_exporter endpoint per host and one Modbus TCP PDU per
``rack.pdus`` entry (see :mod:`rackpower_nodes.sim.live`, docs/pdu.md), until SIGINT/SIGTERM
or ``--duration``; with ``--control`` it takes fault-injection commands (PDU and BMC reboots,
board stalls, cable pulls, garbage, simulated faults; :mod:`rackpower_nodes.sim.control`) on a
Unix socket.

``--fault`` (repeatable) injects a simulated component or sensor fault
(:mod:`rackpower_nodes.sim.faults`): its kind, component, onset and growth time (hours after
the start in ``fast``, seconds in ``live``; growth 0 = a step) and magnitude (default: the
middle of the kind's range, docs/rack-simulator.md "Faults"). ``fast`` saves them as
``DIR/rack_sim_faults.json``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rackpower_nodes.core.params import ConfigError
from rackpower_nodes.core.schedule import ScheduleError
from rackpower_nodes.sim.faults import FaultSpecError
from rackpower_nodes.sim.faults.plan import parse_fault
from rackpower_nodes.sim.rack_sim import (
    DEFAULT_CONFIG,
    PRESETS,
    SimConfigError,
    SimData,
    generate,
    preset_config,
)

__all__ = ["main"]

_log = logging.getLogger("rackpower_sim")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rackpower-sim", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fast = sub.add_parser("fast", help="generate hours of data into a folder")
    fast.add_argument("--hours", type=float, default=24.0, help="simulated hours (default 24)")
    fast.add_argument("--seed", type=int, default=None, help="seed (default: the config's)")
    fast.add_argument("--out", type=Path, required=True, help="output folder")
    which = fast.add_mutually_exclusive_group()
    which.add_argument("--config", type=Path, default=None,
                       help=f"rack config YAML (default {DEFAULT_CONFIG})")
    which.add_argument("--preset", choices=sorted(PRESETS), default=None,
                       help="a shipped rack: office (the default day), ai (GPU training and "
                            "inference with a batch scheduler) or mixed")
    fast.add_argument("--rate-hz", type=int, default=None,
                      help="power samples per second (default: the config's)")
    fast.add_argument("--png", type=Path, default=None, help="also draw the plot here")
    fast.add_argument("--bag", type=Path, default=None,
                      help="also write the run as a rosbag2 (MCAP) bag folder here, as "
                           "`ros2 bag record` of the live graph would")
    fast.add_argument("--namespace", default="/rack_01", help="topic namespace in --bag")
    fast.add_argument("--fault", action="append", default=[],
                      metavar="KIND:COMPONENT:ONSET_H[:GROWTH_H[:MAGNITUDE]]",
                      help="inject a simulated fault, onset and growth in hours (repeatable)")
    plot = sub.add_parser("plot", help="plot data written by 'fast'")
    plot.add_argument("--data", type=Path, required=True, help="folder written by 'fast'")
    plot.add_argument("--out", type=Path, required=True, help="PNG file to write")
    plot.add_argument("--title", default=None, help="plot title")
    live = sub.add_parser("live", help="play the rack's hardware in real time")
    live.add_argument("--link", required=True, help="symlink to the sensor board's pty")
    live.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="rack config YAML")
    live.add_argument("--seed", type=int, default=None, help="seed (default: the config's)")
    live.add_argument("--channels", type=int, default=64, help="board channels")
    live.add_argument("--rate", type=float, default=1000.0, help="board frames per second")
    live.add_argument("--scale", type=float, default=0.001, help="board A per ADC count")
    live.add_argument("--exporter-base-port", type=int, default=9101,
                      help="host i serves node_exporter metrics on 127.0.0.1:<base + i> "
                           "(0: free ports)")
    live.add_argument("--pdu-base-port", type=int, default=5020,
                      help="PDU i (rack.pdus order) serves Modbus TCP on 127.0.0.1:<base + i> "
                           "(0: free ports; see the manifest)")
    live.add_argument("--no-pdus", action="store_true",
                      help="run no simulated PDUs (the board shows unthrottled demand)")
    live.add_argument("--pdu-map", default="rackpower_sim",
                      help="register map of the simulated PDUs (preset name or YAML path)")
    live.add_argument("--bmc-port", type=int, default=5080,
                      help="the servers' simulated BMCs serve Redfish on 127.0.0.1:<port>, "
                           "one chassis per server (0 = a free port)")
    live.add_argument("--no-bmcs", action="store_true", help="run no simulated BMCs")
    live.add_argument("--bmc-api", default="alternate",
                      choices=("alternate", "environment_metrics", "power_control"),
                      help="Redfish schema of the power limit (alternate: by server)")
    live.add_argument("--manifest", type=Path, default=None,
                      help="write the board link, channel map, exporter and PDU URLs here "
                           "(JSON)")
    live.add_argument("--corrupt-prob", type=float, default=0.0, help="per-frame bit flips")
    live.add_argument("--garbage-prob", type=float, default=0.0, help="garbage bursts")
    live.add_argument("--duration", type=float, default=0.0, help="s; 0 = until stopped")
    live.add_argument("--control", type=Path, default=None,
                      help="take fault-injection commands as JSON lines on this Unix socket "
                           "(reboot_pdu, reboot_bmc, board_stall, cable_pull, garbage, "
                           "inject_fault, fail_feed, restore_feed, stats; "
                           "docs/rack-simulator.md)")
    live.add_argument("--feeds", type=Path, default=None,
                      help="YAML with a feeds: section (e.g. config/rack_feeds.yaml): the PDUs "
                           "hang on redundant feeds, a breaker each (default: one breaker)")
    live.add_argument("--fault", action="append", default=[],
                      metavar="KIND:COMPONENT:ONSET_S[:GROWTH_S[:MAGNITUDE]]",
                      help="inject a simulated fault, onset and growth in seconds after the "
                           "start (repeatable)")
    return parser


def _live(args: argparse.Namespace) -> int:
    import contextlib
    import signal
    import threading

    from rackpower_nodes.sim.live import LiveRack
    from rackpower_nodes.sim.sensor_board import FaultConfig

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    faults = FaultConfig(corrupt_prob=args.corrupt_prob, garbage_prob=args.garbage_prob,
                         seed=args.seed)
    rack = LiveRack(str(args.link), args.config, args.seed, args.channels, args.rate,
                    args.scale, exporter_base_port=args.exporter_base_port, faults=faults,
                    pdu_base_port=None if args.no_pdus else args.pdu_base_port,
                    pdu_map=args.pdu_map,
                    bmc_port=None if args.no_bmcs else args.bmc_port, bmc_api=args.bmc_api,
                    sim_faults=[parse_fault(f, unit_s=1.0) for f in args.fault],
                    feeds=args.feeds)
    with rack, contextlib.ExitStack() as stack:
        if args.control is not None:
            from rackpower_nodes.sim.control import ControlServer

            stack.enter_context(ControlServer(rack, args.control))
        if args.manifest is not None:
            rack.write_manifest(args.manifest)
        _log.info("board on %s; exporters %s; PDUs %s; BMCs %s", rack.board.port_path,
                  " ".join(rack.fleet.urls.values()),
                  " ".join(f"{n}={s.url}" for n, s in rack.pdus.items()) or "none",
                  rack.bmc.url if rack.bmc is not None else "none")
        stop.wait(args.duration if args.duration > 0 else None)
        # shutting down: a second Ctrl-C (a terminal's on top of launch's) must neither cut the
        # devices' stop short nor kill the process while the interpreter exits, when it has
        # put the default handlers back
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
    return 0


def _fast(args: argparse.Namespace) -> int:
    began = time.perf_counter()
    config = (preset_config(args.preset) if args.preset is not None
              else args.config if args.config is not None else DEFAULT_CONFIG)
    faults = [parse_fault(f) for f in args.fault]
    data = generate(args.hours, args.seed, args.rate_hz, config, faults=faults)
    generated = time.perf_counter() - began
    data.save(args.out)
    _log.info("%.2f h, %d components at %g Hz in %.1f s (+%.1f s to save) -> %s",
              args.hours, len(data.names), data.rate_hz, generated,
              time.perf_counter() - began - generated, args.out)
    if args.png is not None:
        _plot(data, args.png, None)
    if args.bag is not None:
        from rackpower_nodes.sim.bag_export import write_bag

        write_bag(data, args.bag, args.namespace)
        _log.info("bag -> %s", args.bag)
    return 0


def _plot(data: SimData, out: Path, title: str | None) -> None:
    from rackpower_nodes.sim.plot import plot_power

    plot_power(data, out, title)
    _log.info("plot -> %s", out)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rackpower-sim``; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        if args.command == "fast":
            return _fast(args)
        if args.command == "live":
            return _live(args)
        _plot(SimData.load(args.data), args.out, args.title)
        return 0
    except (SimConfigError, ScheduleError, ConfigError, FaultSpecError, OSError) as exc:
        _log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
