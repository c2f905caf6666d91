"""Settings and answers of the physical checks: :class:`ChecksConfig`, :class:`Finding`.

Pure module. The checks themselves are in :mod:`.checks` (stuck channel, outlet dropouts) and
:mod:`.sensor` (the board against an independent meter).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from rackpower_nodes.core.health.types import FAULT_CLASSES

__all__ = ["ChecksConfig", "Finding"]

#: settings that must be > 0 (the others >= 0)
_POSITIVE = ("stuck_s", "powered_w", "frozen_ref_sd_w", "zero_w", "min_level_w",
             "max_dropout_s", "dropout_window_s", "cusum_h", "x_clip", "cusum_cap",
             "max_gap_s", "fit_knot_s", "max_offset_w", "frozen_minutes", "frozen_window_min",
             "dropouts_fault", "dropouts_kept_up_fault", "min_pairs", "fit_minutes",
             "calib_minutes", "decide_minutes", "decide_wait_minutes", "decide_evidence",
             "calib_se_floor_w", "line_window_min", "line_block_min", "line_z",
             "line_gain_se")


@dataclass(frozen=True)
class ChecksConfig:
    """Thresholds of :class:`~rackpower_nodes.core.health.checks.PhysicalChecks`; none is
    learned, so the checks work from a component's first minute.

    **Stuck channel** (``sensor_stuck``). A real load's current is never constant: the board
    samples it at 1 kHz (10 Hz in the simulator) and sees at least the PSU's ripple and
    the load's noise, 0.14 W std within a second on the quietest simulated component (a
    switch, seeds 100-102, every preset) and more on real ones. A second counts as *flat*
    when its std is at most ``stuck_std_w`` (0.01 W, 14x below that floor) and its mean moved
    at most ``stuck_step_w`` (0.01 W) from the second before, while the component is powered
    (its mean or the reference above ``powered_w``, or its host's telemetry is coming).
    ``stuck_s`` flat seconds in a row (10 s) are a fault, half of them a watch; a healthy
    channel would need ten seconds in a row each 14 standard deviations quiet, which we never
    saw in 3 x 3 simulated days x 16 components, so the false-alarm rate is set by how the
    board's readings are made, not by chance. A channel stuck with a little noise still on it
    is caught per minute instead, against a moving reference: a minute is *frozen* when the
    board's per-second means vary less than ``frozen_ratio`` (0.1) of the reference's moves
    (its variance less its own white noise, estimated from its second-to-second steps), or
    when over the last ``frozen_window_min`` (10) minutes' means the board's slope against
    the reference is below ``frozen_ratio`` -- each only while the reference moves by more
    than ``frozen_ref_sd_w`` (5 W, several times a class-1 meter's noise on a minute of a few
    hundred W). ``frozen_minutes`` (3) frozen minutes, not broken by one where the reference
    moved and the board followed, are a fault. A healthy board follows with a slope near 1.
    A stuck finding at fault level takes precedence over an offset or gain: it explains the
    difference to the reference.

    **Outlet dropout** (``outlet_dropout``). A second is *out* when the board's minimum is at
    most max(``zero_w``, ``zero_frac`` x the component's level) -- 5 W, 5 %: a dropped
    outlet draws the EMI filter's fraction of a watt; an idle server still draws tens of W.
    The level is the mean of the last second not out and must be at least ``min_level_w``
    (20 W) for a dropout to count ("normal draw far above 0"). A run of out seconds is a
    dropout when it lasted at most ``max_dropout_s`` (30 s: relay chatter and PSU dropouts
    last under a few seconds), or when it lasted longer while the host's telemetry kept
    coming every second (the host stayed up: not a planned power-off, where the draw is ~0 for
    long and the telemetry stops). ``dropouts_fault`` (2) dropouts within ``dropout_window_s``
    (6 h) are a fault, one a watch; so is ``dropouts_kept_up_fault`` (1) dropout during which
    the host's telemetry kept coming every second: the host stayed up (a second cord or PSU
    carried it) while this cord's draw fell to ~0 W, so its supply was cut, which no
    planned power-off does. A healthy outlet never goes to ~0 W for part of a second with
    its load running, so the false-alarm rate is that of a planned power-off of under 30 s
    without telemetry, twice in 6 h.

    **Board vs reference** (``sensor_offset``, ``sensor_gain``). Each complete minute where
    at least ``min_pairs`` (5) seconds have both a board mean and a reference reading above
    ``powered_w`` gives d, the mean of board - reference over those seconds (the meters are
    not synchronised to the second; a minute's mean tolerates a sub-second skew). Its
    tolerance is s = (``ref_accuracy`` + ``board_accuracy``) x reference + ``floor_w`` +
    ``se_k`` x the standard error of d from that minute's own seconds (learned-free noise:
    skew on a fast-moving load shows there). ``ref_accuracy`` = 1 % (IEC 62053-21 class 1),
    ``board_accuracy`` = 0.5 % (a calibrated channel; the simulated board is exact),
    ``floor_w`` = 1 W (a PDU outlet's resolution at low load), ``se_k`` = 2. A two-sided
    CUSUM runs on x = clip(d / s, +-``x_clip``): S = max(0, S + x - ``cusum_k``), capped at
    ``cusum_cap`` x ``cusum_h`` (so it clears within minutes of a repair), fault at
    ``cusum_h``, watch at half.
    Design: healthy |d| <= s by the accuracies' definition, so even with both meters at their
    worst-case bias (x = 1) the drift is 1 - k = -0.5 per minute; with the minute's noise at
    sd 0.5 in units of s, Siegmund's approximation gives an in-control run length of
    about exp(2 x 0.5 x 8 / 0.25) / 2 = 4e13 minutes, far beyond the target of one false alarm
    per component per 16 weeks (161 280 min; 1 per rack-week with 16 components). The clip at
    4 means one wild minute adds at most 2.5: four minutes in a row, each beyond 4 s, are
    needed for a fault, which keeps the heavy tails of a skewed fast load from alarming.
    A second CUSUM, the same k and h, judges the difference against its own calibration:
    over the component's first ``calib_minutes`` (60) judged minutes with the first CUSUM at 0
    the meters' relative difference beta = sum(d ref) / sum(ref^2) is learned (the meter's
    fixed error of up to 1 %, not a baseline of the load), and from then on e = d - beta ref
    is judged by how far it lies beyond the band a = ``stability`` (0.2 %: a class-1
    meter's drift is a fraction of its accuracy; its temperature coefficient is 0.05 %/K)
    x reference + ``calib_floor_w`` (0.5 W), in standard errors of the minute's mean:
    x = (+-e - a) / max(se, ``calib_se_floor_w``), clipped and accumulated as above. The
    band is a bias that does not average out, the standard error is noise that does, so
    they are kept apart: healthy |e| <= a gives x <= 0 plus noise of sd 1, a drift of
    -1.5 per minute or less (in-control run length beyond 1e8 minutes by the same
    approximation). A 130 W server's offsets are found from ~1.5 W, an 830 W switch's
    from ~3 W (its minute's standard error against a 1 %-noisy meter is ~1 W, which the
    first form, a + 2 se as one band, left at ~6.5 W), a 5 kW GPU server's from ~12 W.
    A sensor fault present before the calibration ends is left to the first CUSUM.
    Third, **the line**: both bands above grow with the load, because a meter's gain error
    and drift do; an offset does not. Over the seconds of the last ``line_window_min`` (240)
    judged minutes, the board - reference difference is fitted as offset + gain_j x board,
    one gain per ``line_block_min`` (30) minute block and one offset for the window
    (weighted by 1 / board², a reading error relative to the load; regressed on the board,
    whose second is a mean of its samples, so the reference's reading error does not bend
    the slope). Whatever the meters' gains are, or do from block to block (a step, a
    meter warming with the load), they go into the gains; the offset is judged against
    ``floor_w`` (the stated accuracy's constant part) in its standard errors,
    z = (|offset| - floor_w) / se, a fault at z >= ``line_z`` (8), a watch at half. Only a
    load that moves within its blocks places the offset: an 8-GPU server's training
    iterations (~1.5 to 4.5 kW within a minute) give se ~0.6-1.2 W over 4 h, where the
    calibrated band above is ~9 W; a flat load (a switch) gives se of several W and more.
    Tuning seeds 200-202 (ai and mixed racks, 24 h, every component): the largest clean z of
    a day was 3.0 (3.3 with 10-minute blocks, 3.9 with 1-minute ones, 3.4 with one gain for
    the window, which a gain step inside it bends); steps of -8 W at 4 h on the five
    training GPU servers of the two racks, three days, were faults after 2-6 h in 13 of 15
    (the other two after 13.5 and 19 h); 10-minute blocks found 10 of 15 within 6 h,
    1-minute blocks none within 20 h (se ~1.7 W). The inference servers' load moves
    too little within half an hour (se 2.5-3 W). The standard error takes the reference's
    reading errors as independent from second to second (a meter whose errors hold over
    seconds would need a larger ``line_z``). A component fault moves both meters alike.
    The line holds only while the meters' gains are sound: it abstains while any block's
    gain (given the offset) lies beyond the stated accuracies (``ref_accuracy`` +
    ``board_accuracy``) or departs from the window's mean gain by more than twice
    ``stability``, each after ``line_gain_se`` (4) of its standard errors. A gain error's
    onset inside a block bends that block's line: without this, on a switch's steady load a
    5 % step made the block's slope ~1 and the offset ~ -600 W, and the sixteenth
    evaluation run named 10 of 22 gain errors offsets; a gain error is the CUSUMs' to find.
    The findings of both are combined by score; a finding is conclusive (>= 1) only once
    the cause is told too: ``decide_minutes`` (10) minutes since the change point where the
    load's moves told offset from gain, or ``decide_wait_minutes`` (180) otherwise. A gain
    error that grows shows as a few W at first, which a load moving by tens of W cannot
    tell from an offset within an hour; a server's load moves more over a few hours (tuning
    seeds 30000-30009 and 3000-3009: at 60 min two gain errors, -4.6 % on a 290 W server
    and +8.4 % on a switch, were named offsets; at 180 min both were told, and no finding
    changed its cause otherwise). The price is up to two hours more before a sensor fault
    on a load that does not move (a switch) is a fault; a sensor fault never trips its
    component.
    A difference of 2 s and more is found within 8 minutes, of 5.5 s in 4 (a 130 W server:
    s ~ 3.3 W, so offsets from ~5 W and gain errors from ~4 % are found; a 4 kW GPU server:
    s ~ 70 W, gain errors from ~3 %, offsets of tens of W not at all -- the meter cannot
    vouch for them). Once S grew, the change point is the end of the last minute with
    S = 0, and the minutes since it (at most ``fit_minutes``, 24 h) decide offset vs gain:
    d = a(t) (an offset, drifting as it may) against d = g(t) x ref (a gain error), a(t) and
    g(t) piecewise linear with knots every ``fit_knot_s`` (1 h), so what tells them apart is
    whether d follows the load's faster moves; the model with the smaller residual sum wins
    when below ``decide_margin`` (0.8) x the other's and its evidence, minutes x ln(the
    ratio of the sums), is at least ``decide_evidence`` (10: odds of ~150 to 1; tuning seeds
    3000-3009 named a +8 % gain on a server whose load moved 6 W in 10 minutes an offset
    on a ratio of 0.77 from 11 minutes). Short of the margin, the fit the evidence favours
    (at least ``decide_evidence``) names the cause, which counts only once the wait is
    over: a gain growing on a slowly moving load, found while still small, is its fit's by
    the evidence well before the margin. A steady load (a switch) cannot tell
    them apart: then a difference beyond ``max_offset_w`` (30 W: a Hall channel's offset drift
    stays within ~0.1 A) is a gain error, a smaller one an offset. A board whose slope
    against the reference is below ``frozen_ratio`` (it ignores a load moving by more than
    2 x ``frozen_ref_sd_w``) is stuck. Component faults (PSU, fan, runaway, disk) change both
    meters alike: d does not move. ``max_gap_s`` (5 s): a longer gap between rows breaks a
    run of flat seconds. ``watch_score`` (0.5): findings below it are not reported.
    """

    stuck_std_w: float = 0.01
    stuck_step_w: float = 0.01
    stuck_s: float = 10.0
    powered_w: float = 5.0
    frozen_ratio: float = 0.1
    frozen_ref_sd_w: float = 5.0
    frozen_minutes: int = 3
    frozen_window_min: int = 10
    zero_w: float = 5.0
    zero_frac: float = 0.05
    min_level_w: float = 20.0
    max_dropout_s: float = 30.0
    dropouts_fault: int = 2
    dropouts_kept_up_fault: int = 1
    dropout_window_s: float = 21600.0
    min_pairs: int = 5
    ref_accuracy: float = 0.01
    board_accuracy: float = 0.005
    floor_w: float = 1.0
    se_k: float = 2.0
    cusum_k: float = 1.5
    cusum_h: float = 8.0
    x_clip: float = 4.0
    cusum_cap: float = 3.0
    fit_minutes: int = 1440
    decide_margin: float = 0.8
    decide_evidence: float = 10.0
    fit_knot_s: float = 3600.0
    calib_minutes: int = 60
    decide_minutes: int = 10
    decide_wait_minutes: int = 180
    stability: float = 0.002
    line_window_min: int = 240
    line_block_min: int = 30
    line_z: float = 8.0
    line_gain_se: float = 4.0
    calib_floor_w: float = 0.5
    calib_se_floor_w: float = 0.05
    max_offset_w: float = 30.0
    max_gap_s: float = 5.0
    watch_score: float = 0.5

    def __post_init__(self) -> None:
        for f in self._keys():
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"checks.{f}: {v!r}, expected a finite number")
            if v < 0 or (f in _POSITIVE and v <= 0):
                raise ValueError(f"checks.{f}: {v!r}, expected a number "
                                 f"{'> 0' if f in _POSITIVE else '>= 0'}")
        for f in ("frozen_ratio", "zero_frac", "decide_margin", "watch_score"):
            if not getattr(self, f) <= 1.0:
                raise ValueError(f"checks.{f}: {getattr(self, f)!r}, expected <= 1")
        if self.cusum_k >= self.x_clip:
            raise ValueError(f"checks.cusum_k: {self.cusum_k!r}, expected below x_clip "
                             f"({self.x_clip!r}) or no minute could raise the CUSUM")

    @classmethod
    def _keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) )

    @classmethod
    def from_mapping(cls, d: Mapping) -> ChecksConfig:
        """Settings from a mapping (a YAML section); an unknown key raises ValueError naming
        it, a value of the wrong kind one naming the key and the value."""
        if not isinstance(d, Mapping):
            raise ValueError(f"checks: {d!r}, expected a mapping of settings")
        known = cls._keys()
        for key in d:
            if key not in known:
                raise ValueError(f"checks.{key}: unknown setting (known: {', '.join(known)})")
        return cls(**{k: d[k] for k in d})

    def as_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in self._keys()}


@dataclass(frozen=True)
class Finding:
    """One check's current evidence against a component.

    ``score`` is the evidence over its fault threshold (>= 1: conclusive, fault; 0.5..1:
    watch); ``cause`` one of the fault classes; ``since_unix`` the estimated start of the
    evidence; ``evidence`` named figures (W, fractions, counts, s) an operator can check.
    """

    component: str
    cause: str
    score: float
    since_unix: float
    evidence: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cause not in FAULT_CLASSES:
            raise ValueError(f"cause: {self.cause!r}, expected one of {FAULT_CLASSES}")
