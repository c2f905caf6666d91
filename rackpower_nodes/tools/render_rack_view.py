"""Draw the rack view (the markers the `rack_view` node publishes) with matplotlib.

    rackpower-render-rack-view                         # docs/images/rack_view.png
    rackpower-render-rack-view --preset ai --hours 24 --minutes 5 --out view.png

The busy moment: the simulator's fast mode generates `--hours` of the preset's rack, the
busiest `--minutes` of it (highest mean total demand) run through the allocation controller
in reactive mode (what each component may draw is min(demand, the allocation in force one
step earlier), as the PDU serves it), and the step with the highest measured total is drawn.
The markers come from core/rack_view.py's RackView, as in the node; the picture is their
front view (x across the rack, z up), seen from the front.
"""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rackpower_nodes.core.rack_view import Marker, RackSnapshot, RackView, snapshot

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "docs" / "images" / "rack_view.png"


def view_for(preset: str) -> RackView:
    """The RackView the node would build from the preset's config (its rack_view section;
    the defaults where it has none)."""
    from rackpower_nodes.core.params import ConfigError
    from rackpower_nodes.core.rack_view_config import load_rack_view_config_yaml
    from rackpower_nodes.tools.evaluate_data import _default_config

    try:
        cfg = load_rack_view_config_yaml(_default_config(preset))
    except ConfigError as exc:
        if "no section for node 'rack_view'" not in str(exc):
            raise
        return RackView()
    return RackView(cfg.placement, cfg.near_fraction, cfg.held_fraction)


def busy_snapshot(preset: str = "ai", hours: float = 24.0, minutes: float = 5.0,
                  seed: int = 7, name: str = "rack_01") -> RackSnapshot:
    """The rack at the busiest step of the busiest `minutes` of `hours` simulated."""
    from rackpower_nodes.core.allocation import AllocationController
    from rackpower_nodes.sim.rack_sim import generate
    from rackpower_nodes.tools.evaluate_data import (
        _default_config, actuator_config, demand_columns)

    config = actuator_config(_default_config(preset), [])
    data = generate(hours, seed=seed, preset=preset)
    names = [c.id for c in config.components]
    demand = demand_columns(data, names)
    rate = float(data.rate_hz)
    span = max(int(minutes * 60 * rate), 2)
    total = np.convolve(demand.sum(axis=1), np.ones(span) / span, mode="valid")
    first = int(np.argmax(total))
    ctrl = AllocationController(config.components, config.policy, "reactive")
    in_force = ctrl.static_allocation()
    best, best_total = None, -1.0
    for k in range(first, first + span):
        measured = np.minimum(demand[k], in_force)
        decision = ctrl.step(data.start_unix + k / rate, measured, None)
        if measured.sum() > best_total:
            best, best_total = (measured, decision), float(measured.sum())
        in_force = decision.allocated_w
    measured, decision = best
    return snapshot(name, decision.mode, decision.mode_reason, config.policy.budget_w,
                    config.policy.breaker_w, names, measured, decision.allocated_w,
                    [c.ceiling_w for c in config.components])


def draw(markers: Sequence[Marker], out: Path, dpi: int = 90) -> None:
    """The markers' front view into `out` (PNG): cubes as rectangles (x, z extents), lines as
    segments, text centred at its position; deletes are skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    shown = [m for m in markers if m.shape in ("cube", "lines", "text")]
    xs = [p[0] for m in shown for p in (m.points or (m.position,))]
    zs = [p[2] for m in shown for p in (m.points or (m.position,))]
    x0, x1, z0, z1 = min(xs) - 0.35, max(xs) + 0.35, min(zs) - 0.1, max(zs) + 0.08
    width_in = 9.0
    fig = plt.figure(figsize=(width_in, width_in * (z1 - z0) / (x1 - x0)))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(x0, x1)
    ax.set_ylim(z0, z1)
    ax.set_aspect("equal")
    ax.axis("off")
    points_per_m = 72.0 * width_in / (x1 - x0)
    # back to front (y descending): what stands in front of the rack face is drawn last
    for m in sorted(shown, key=lambda m: -min(p[1] for p in (m.points or (m.position,)))):
        if m.shape == "cube":
            (cx, _, cz), (sx, _, sz) = m.position, m.scale
            ax.add_patch(Rectangle((cx - sx / 2, cz - sz / 2), sx, sz, facecolor=m.color,
                                   edgecolor="none"))
        elif m.shape == "lines":
            for a, b in zip(m.points[::2], m.points[1::2]):
                ax.plot([a[0], b[0]], [a[2], b[2]], color=m.color,
                        linewidth=m.scale[0] * points_per_m, solid_capstyle="butt")
        else:
            ax.text(m.position[0], m.position[2], m.text, color=m.color, ha="center",
                    va="center", fontsize=m.scale[2] * points_per_m * 0.8,
                    linespacing=1.15, family="DejaVu Sans")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, facecolor="white")
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="ai", choices=("office", "ai", "mixed"))
    parser.add_argument("--hours", type=float, default=24.0, help="hours simulated (default 24)")
    parser.add_argument("--minutes", type=float, default=5.0,
                        help="length of the busy stretch run through the controller")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if not (args.hours > 0 and 0 < args.minutes <= args.hours * 60):
        print(f"--hours {args.hours} --minutes {args.minutes}: expected hours > 0 and "
              "0 < minutes <= hours x 60", file=sys.stderr)
        return 2
    snap = busy_snapshot(args.preset, args.hours, args.minutes, args.seed)
    markers = view_for(args.preset).markers(snap)
    draw(markers, args.out)
    held = sum(1 for c in snap.components if math.isfinite(c.measured_w)
               and c.measured_w >= 0.97 * c.allocated_w)
    print(f"{args.out}: {len(snap.components)} components, measured "
          f"{snap.total_measured_w:.0f} W, allocated {snap.total_allocated_w:.0f} W of "
          f"{snap.budget_w:.0f} W, {held} at their allocation ({snap.mode})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
