"""Naming the cause of a learned alarm from the evidence since its change point.

:func:`name_cause` is called while a component's learned detectors (:mod:`.baseline`) raise
its score; it looks at the minutes since the estimated change point (at least the last
``min_window`` minutes) and at which detectors carry the evidence. The physical checks'
findings (sensor faults, outlet dropouts) are decided elsewhere and take precedence
(:mod:`.monitor`). Reasoning per class:

- **disk_retries** (storage only): a failing drive re-seeks and re-reads in short bursts of
  a few W lasting under a couple of seconds. Such a burst lifts the board's standard
  deviation within its second, so the minute's count of *burst seconds* (that deviation,
  less what the host's load steps explain, above its training quantile) rises above its
  normal rate, while the minute-mean power moves little. Named when the burst detector
  carries the most evidence.
- **runaway_process**: a process nobody started keeps the CPU busy. Utilisation rises above
  what the workload explains (no job running, request rate and time of day: the
  expected-utilisation model), and power rises *with* it, consistent with the power-vs-
  utilisation curve, so the power residual stays small (what remains of it comes from
  features that usually move with utilisation, such as traffic, staying put). Named when
  a utilisation detector (prewhitened, or on the residual's level) carries the most
  evidence, or when over the latest hour the
  utilisation is above its expectation by :data:`UTIL_SDS` standard deviations of a healthy
  hour's mean (at least :data:`UTIL_MIN`; :data:`UTIL_SHIFT` where that is unknown). PSU and
  fan faults leave utilisation alone.
- **fan_wear**: a worn bearing or a clogged filter makes the fan controller spin faster and
  hunt: an *additive* offset of a few to tens of W that does not scale with load, and a
  periodic ripple with a 15-60 s period (speed hunting). Named when power is up and the
  ripple band's log power over the latest hour is above its normal level by
  :data:`RIPPLE_Z` marginal standard deviations (an hour's mean of a healthy one has a
  standard deviation of about 0.15; where it wanders more, as on GPU servers, by
  :data:`UTIL_SDS` of its hourly standard deviations), or when the residual is better explained by
  an offset than by a fraction of the expected draw.
- **psu_efficiency**: a PSU losing efficiency draws ``output / efficiency`` at the wall: a
  residual *proportional to load* (a few % of the expected draw), utilisation unchanged,
  growing slowly over hours, no ripple. Where the BMC reports the PSUs' own input and
  output power (:mod:`.psu`) this is measured directly: named when the PSU detector carries
  evidence (watch level or more), and *not* named when power is up while that detector,
  running, stays quiet (the extra draw then passes through the PSU: a DC-side load such as
  a fan). Without those readings: named when power is up, the ripple is normal and the
  residual follows the expected draw (its minute-to-minute variation, after removing the
  slow trend, scales with the expected draw's) or the load hardly varies.
- **sensor_gain / sensor_offset** below the physical checks' tolerance: when an independent
  meter reads the component, its own residual against the same expected draw tells whether
  the component really draws more. If the board's residual is up but the meter's stays at
  less than half of it, only the measurement moved: a gain error when the board-minus-meter
  gap follows the load (proportionality above 0.5), an offset otherwise.
- a **drop** in power that no component fault explains (components do not draw less as they
  fail; outlet dropouts are the checks' to find) means the measurement is off: named
  ``sensor_offset`` (without an independent meter nothing tells offset from gain).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Evidence", "name_cause"]

#: the ripple's standardized mean over the window above which the ripple counts as raised
RIPPLE_Z = 0.25
#: minutes of the window the ripple's level is judged on (the latest)
RECENT_MIN = 60
#: utilisation up by this much (0..1) with power consistent with it: a runaway
UTIL_SHIFT = 0.12
#: ... or, where the model knows how much an hour's mean utilisation residual varies when
#: healthy, by UTIL_SDS of its standard deviations (and at least UTIL_MIN)
UTIL_SDS = 3.0
UTIL_MIN = 0.05
#: the PSU detector's score (S / h) from which its evidence names the PSU
PSU_SCORE = 0.5


@dataclass(frozen=True)
class Evidence:
    """A component's learned figures over the window since the change point (minutes), and
    its detectors' current scores (S / h) by name."""

    kind: str
    power_res_w: np.ndarray
    expected_w: np.ndarray
    util_res: np.ndarray
    ripple_z: np.ndarray
    scores: dict[str, float]
    #: the independent meter's minute mean minus the expected draw, W (NaN: no meter)
    ref_res_w: np.ndarray | None = None
    #: standard deviation of a healthy hour's mean utilisation residual (NaN: unknown)
    util_hour_sd: float = float("nan")
    #: the same for ``ripple_z``
    ripple_hour_sd: float = float("nan")
    #: the PSUs' fractional extra input at the same output (NaN: no PSU readings)
    psu_extra: np.ndarray | None = None


def name_cause(ev: Evidence) -> tuple[str, dict[str, float]]:
    """The suspected cause and the figures behind it (W, fractions, z-scores)."""
    res, exp = ev.power_res_w, ev.expected_w
    ok = np.isfinite(res) & np.isfinite(exp)
    shift = float(np.mean(res[ok])) if ok.any() else 0.0
    u_recent = ev.util_res[-RECENT_MIN:]
    util_up = float(np.nanmean(u_recent)) if np.isfinite(u_recent).any() else 0.0
    recent = ev.ripple_z[-RECENT_MIN:]            # the ripple's level now, not at onset
    ripple = float(np.nanmean(recent)) if np.isfinite(recent).any() else 0.0
    level = float(np.mean(exp[ok])) if ok.any() else float("nan")
    prop = _proportionality(res[ok], exp[ok])
    evidence = {"shift_w": shift, "expected_w": level, "shift_frac": shift / level
                if level and np.isfinite(level) else float("nan"), "util_shift": util_up,
                "ripple_z": ripple, "proportionality": prop,
                **{f"score_{k}": float(v) for k, v in ev.scores.items()}}
    s = ev.scores
    top = max(s, key=lambda k: s[k])
    sensor = _sensor_part(ev, shift)
    if sensor is not None:
        evidence.update(sensor[1])
        return sensor[0], evidence
    if ev.kind == "storage" and top == "bursts":
        return "disk_retries", evidence
    psu_known = "psu" in s                      # the PSU detector runs on its own readings
    if psu_known:
        extra = ev.psu_extra[-RECENT_MIN:] if ev.psu_extra is not None else np.empty(0)
        evidence["psu_extra_frac"] = float(np.nanmean(extra)) if np.isfinite(extra).any() \
            else float("nan")
        if s["psu"] >= PSU_SCORE and s["psu"] >= s.get("util", 0.0):
            return "psu_efficiency", evidence
    util_bar = UTIL_SHIFT if not np.isfinite(ev.util_hour_sd) else \
        max(UTIL_MIN, UTIL_SDS * ev.util_hour_sd)
    evidence["util_bar"] = util_bar
    if top in ("util", "util_level") or util_up > util_bar:
        return "runaway_process", evidence
    if top == "power_down" or (shift < 0 and top != "ripple"):
        return "sensor_offset", evidence
    ripple_bar = RIPPLE_Z if not np.isfinite(ev.ripple_hour_sd) else \
        max(RIPPLE_Z, UTIL_SDS * ev.ripple_hour_sd)
    evidence["ripple_bar"] = ripple_bar
    if ripple > ripple_bar or s.get("ripple", 0.0) >= 0.5:
        return "fan_wear", evidence
    if psu_known or (np.isfinite(prop) and prop < 0.3):
        return "fan_wear", evidence             # the PSU's own meters say it is not the PSU
    return "psu_efficiency", evidence


def _sensor_part(ev: Evidence, shift: float) -> tuple[str, dict[str, float]] | None:
    """(sensor cause, figures) when the meter says the component did not move, else None."""
    if ev.ref_res_w is None or ev.scores.get("power_up", 0.0) < 0.5 or shift <= 0:
        return None
    ref = ev.ref_res_w
    ok = np.isfinite(ref) & np.isfinite(ev.power_res_w) & np.isfinite(ev.expected_w)
    if ok.sum() < 0.5 * len(ref) or ok.sum() < 10:
        return None
    ref_shift = float(np.mean(ref[ok]))
    if ref_shift >= 0.5 * shift:
        return None
    gap = ev.power_res_w[ok] - ref[ok]
    prop = _proportionality(gap, ev.expected_w[ok])
    cause = "sensor_gain" if np.isfinite(prop) and prop > 0.5 else "sensor_offset"
    return cause, {"ref_shift_w": ref_shift, "board_ref_gap_w": float(np.mean(gap)),
                   "gap_proportionality": prop}


def _proportionality(res: np.ndarray, exp: np.ndarray, smooth: int = 15) -> float:
    """How far the residual's fast variation follows the expected draw's, as a fraction of
    what a purely proportional residual would show: the slope of the high-passed residual on
    the high-passed expected draw, over ``mean(res) / mean(exp)``. ~1: proportional (PSU),
    ~0: additive (fan). NaN when the load hardly varies or the shift is too small to tell."""
    if len(res) < 2 * smooth or abs(np.mean(exp)) < 1e-9:
        return float("nan")
    kernel = np.ones(smooth) / smooth
    hp_r = res - np.convolve(res, kernel, mode="same")
    hp_e = exp - np.convolve(exp, kernel, mode="same")
    hp_r, hp_e = hp_r[smooth:-smooth], hp_e[smooth:-smooth]
    var_e = float(np.sum(hp_e ** 2))
    ratio = float(np.mean(res) / np.mean(exp))
    if var_e <= 0 or ratio <= 0:
        return float("nan")
    slope = float(np.sum(hp_r * hp_e) / var_e)
    # a slope estimate with noise larger than the ratio itself cannot tell
    noise = float(np.std(hp_r - slope * hp_e)) / np.sqrt(var_e)
    if noise > 0.5 * ratio:
        return float("nan")
    return slope / ratio
