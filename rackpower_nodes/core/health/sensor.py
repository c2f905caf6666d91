"""The board against an independent meter, per minute: :class:`ReferenceCheck`.

Pure module. The sensor board and a PDU outlet (or BMC) meter the same power; a component
fault (a PSU losing efficiency, a worn fan, a runaway process, disk retries) changes both
alike, a sensor fault only the board. Per complete minute the mean board - reference
difference is judged against the meters' stated accuracy and the minute's own noise by a
two-sided CUSUM; once it grows, a regression of the difference over the minutes since the
change point tells an offset (constant, or drifting with time) from a gain error
(proportional to the load). Beside it, the line of the difference against the board over
the last hours' seconds: its intercept is an offset whatever the meters' gains do, which
finds offsets far below a large load's accuracy band where the load swings within minutes
(an 8-GPU server's training iterations). A board that stops following a moving reference
is a stuck channel. The thresholds and their reasoning: :class:`~.checks_config.ChecksConfig`.
"""
from __future__ import annotations

import numpy as np

from rackpower_nodes.core.health.checks_config import ChecksConfig, Finding
from rackpower_nodes.core.health.learning import hat_weights

__all__ = ["ReferenceCheck", "decide_offset_gain"]

_MINUTE_S = 60.0


def hat_basis(t_s: np.ndarray, knot_s: float) -> np.ndarray:
    """(rows, knots) piecewise-linear interpolation basis over ``t_s`` with knots every
    ``knot_s`` s from its first time: any slow time course (a step, a ramp, a plateau) is a
    combination of its columns."""
    t = np.asarray(t_s, dtype=np.float64) - float(np.min(t_s))
    k = int(np.ceil(np.max(t) / knot_s)) + 1 if len(t) else 1
    return hat_weights(t, np.arange(max(k, 1)) * knot_s)


def decide_offset_gain(d_w: np.ndarray, ref_w: np.ndarray, t_s: np.ndarray,
                       cfg: ChecksConfig) -> tuple[str, dict[str, float]]:
    """Offset or gain? ``d_w`` the minute-mean board - reference differences (W) at
    reference ``ref_w`` (W) and times ``t_s`` (s) since the change point.

    An offset is d = a(t), a gain error d = g(t) x ref, with a(t) and g(t) any slow time
    course (:func:`hat_basis`, knots every ``cfg.fit_knot_s``): what tells them apart is
    whether d follows the load's faster moves. The model with the smaller residual sum wins
    when it is below ``cfg.decide_margin`` times the other's *and* the evidence for it,
    ``minutes x ln(rss_other / rss_best)`` (the difference of the two fits' AIC: same
    number of parameters), is at least ``cfg.decide_evidence``, so that a load that barely
    moved over a few minutes does not decide by its noise (``load_told_apart``); short of the
    margin, the fit with that evidence names it (not told apart: the caller waits);
    otherwise (a steady load cannot tell them apart) a difference beyond
    ``cfg.max_offset_w`` is a gain error (a Hall channel's offset drift stays within a
    fraction of an ampere), a smaller one an offset.
    The evidence holds both coefficients of d = offset_w + gain x ref as well."""
    d, r, t = (np.asarray(a, dtype=np.float64) for a in (d_w, ref_w, t_s))
    basis = hat_basis(t, cfg.fit_knot_s)
    if basis.shape[1] * 5 > len(d):             # too few minutes for a time course
        basis = np.ones((len(d), 1))
    rss = []
    for x in (basis, basis * r[:, None]):
        coef = np.linalg.lstsq(x, d, rcond=None)[0]
        rss.append(float(np.sum((d - x @ coef) ** 2)))
    if len(d) >= 2 and np.ptp(r) > 0:
        gain, offset = np.polyfit(r, d, 1)
    else:
        gain, offset = 0.0, float(np.mean(d))
    follows = 1.0 + _fast_slope(d, r, basis)    # board's slope against the reference
    for_gain, for_offset = _evidence(rss[1], rss[0], len(d)), _evidence(rss[0], rss[1], len(d))
    if abs(follows) < cfg.frozen_ratio and np.ptp(r) > 2 * cfg.frozen_ref_sd_w:
        cause, clear = "sensor_stuck", 1.0      # the board ignores a moving load
    elif rss[1] < cfg.decide_margin * rss[0] and for_gain >= cfg.decide_evidence:
        cause, clear = "sensor_gain", 1.0
    elif rss[0] < cfg.decide_margin * rss[1] and for_offset >= cfg.decide_evidence:
        cause, clear = "sensor_offset", 1.0
    elif max(for_gain, for_offset) >= cfg.decide_evidence:     # better, if not by the margin
        cause, clear = ("sensor_gain" if for_gain > for_offset else "sensor_offset"), 0.0
    else:
        cause = "sensor_gain" if abs(np.mean(d[-60:])) > cfg.max_offset_w else "sensor_offset"
        clear = 0.0
    ev = {"offset_w": float(offset), "gain": float(gain), "mean_diff_w": float(np.mean(d)),
          "diff_over_ref": float(np.sum(d * r) / max(np.sum(r * r), 1e-9)),
          "rss_offset_w2": rss[0], "rss_gain_w2": rss[1], "ref_spread_w": float(np.ptp(r)),
          "minutes": float(len(d)), "load_told_apart": clear, "board_follows": float(follows)}
    return cause, ev


def _fast_slope(d: np.ndarray, r: np.ndarray, basis: np.ndarray) -> float:
    """Slope of ``d`` on the reference's moves beyond the slow time course ``basis`` spans
    (d = a(t) + c x ref): -1 when the board ignores the load (stuck), about 0 for an offset
    or a gain error. A difference that grows with time (a drifting offset, a growing gain)
    is the time course's, not the slope's: regressed on ``ref`` alone, such a trend on a load
    that drifted the other way reads as a board that does not follow (tuning seed 30008: a
    gain growing by 1.3 %/h on a GPU server idling at 1.57 kW named stuck)."""
    if len(d) < 2 or np.ptp(r) <= 0:
        return 0.0
    x = np.column_stack([basis, r]) if basis.shape[1] + 1 < len(d) else \
        np.column_stack([np.ones(len(d)), r])
    return float(np.linalg.lstsq(x, d, rcond=None)[0][-1])


def _evidence(rss_best: float, rss_other: float, n: int) -> float:
    """``n ln(rss_other / rss_best)``: how much better the best fit is (its AIC advantage)."""
    return float(n * np.log(max(rss_other, 1e-12) / max(rss_best, 1e-12)))


class ReferenceCheck:
    """Board vs reference for ``m`` components, fed second rows in time order.

    :meth:`update` takes the rows' times (s), board means and reference readings (W) and a
    mask of rows fit to compare (the caller drops stuck and dropped-out seconds); minutes are
    judged once a row of a later minute arrives."""

    def __init__(self, names: tuple[str, ...], config: ChecksConfig):
        self.names, self.cfg = names, config
        m = len(names)
        self._pend_t = np.empty(0)
        self._pend = np.empty((0, 3, m))            # board, ref, use (1/0)
        # row 0: against the meters' stated accuracy; row 1: against the difference's own
        # calibration (its first minutes), within the meters' stability
        self.s_pos, self.s_neg = np.zeros((2, m)), np.zeros((2, m))
        self.zero_pos, self.zero_neg = np.full((2, m), np.nan), np.full((2, m), np.nan)
        self.calib = np.zeros((3, m))              # sum d x ref, sum ref^2, minutes
        self.frozen = np.zeros(m)
        self.frozen_since = np.full(m, np.nan)
        self.last_sd = np.full((m, 2), np.nan)     # the last minute's board, reference sd
        self.win = np.full((config.frozen_window_min, 2, m), np.nan)   # minute means b, r
        self._decided: dict[int, tuple] = {}       # per component: (key, decision), a cache
        self.hist_t = np.empty(0)                  # minute starts
        self.hist = np.empty((0, 5, m))     # d, ref mean, tolerance, d - calibration, its tol
        # per judged minute the line's weighted sums (weight 1 / board^2): w, wb, wd, wbb, wbd,
        # wdd, seconds; the last ``line_window_min`` of them
        self.line = np.zeros((0, 7, m))
        self.line_t = np.empty(0)                   # their minute starts
        self.line_fit = np.full((4, m), np.nan)     # intercept W, its standard error, gain, z
        self.line_zero = np.full(m, np.nan)

    def update(self, t: np.ndarray, board_w: np.ndarray, ref_w: np.ndarray,
               use: np.ndarray) -> None:
        rows = np.stack([board_w, ref_w, use.astype(np.float64)], axis=1)
        t_all = np.concatenate([self._pend_t, np.asarray(t, dtype=np.float64)])
        rows = np.concatenate([self._pend, rows])
        if len(t_all) == 0:
            return
        minute = np.floor(t_all / _MINUTE_S)
        done = int(np.searchsorted(minute, minute[-1]))
        self._pend_t, self._pend = t_all[done:], rows[done:]
        if done:
            self._judge(minute[:done], rows[:done])

    def _judge(self, minute: np.ndarray, rows: np.ndarray) -> None:
        cfg = self.cfg
        b, r, use = rows[:, 0], rows[:, 1], rows[:, 2] > 0.5
        ok = use & np.isfinite(b) & np.isfinite(r) & (r > cfg.powered_w)
        starts = np.flatnonzero(np.r_[True, minute[1:] != minute[:-1]])
        sums = {}
        for key, v in (("n", ok), ("d", b - r), ("r", r), ("b", b)):
            v = np.where(ok, v, 0.0).astype(np.float64)
            sums[key] = np.add.reduceat(v, starts, axis=0)
            if key != "n":
                sums[key + "2"] = np.add.reduceat(v * v, starts, axis=0)
        pair = ok & np.vstack([np.zeros((1, ok.shape[1]), bool), ok[:-1]])
        pair[1:] &= (minute[1:] == minute[:-1])[:, None]
        step = np.where(pair, np.diff(r, axis=0, prepend=r[:1]), 0.0)
        sums["pairs"] = np.add.reduceat(pair.astype(np.float64), starts, axis=0)
        sums["step2"] = np.add.reduceat(step * step, starts, axis=0)
        n = sums["n"]
        judged = n >= cfg.min_pairs
        # the line d = offset + gain x board, weighted for a reading error relative to the load
        # (regressed on the board, whose second is a mean of its samples: the reference's
        # reading error sits in d only, so it does not bend the slope)
        w = np.where(ok, 1.0 / np.maximum(np.where(ok, b, 0.0), cfg.powered_w) ** 2, 0.0)
        b0, d0 = np.where(ok, b, 0.0), np.where(ok, b - r, 0.0)
        line = np.stack([np.add.reduceat(v, starts, axis=0) for v in
                         (w, w * b0, w * d0, w * b0 * b0, w * b0 * d0, w * d0 * d0, ok * 1.0)],
                        axis=1) * judged[:, None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = {k: sums[k] / n for k in ("d", "r", "b")}
            var = {k: np.maximum(sums[k + "2"] / n - mean[k] ** 2, 0.0) * n / (n - 1)
                   for k in ("d", "r", "b")}
            se = np.sqrt(var["d"] / n)
        tol = ((cfg.ref_accuracy + cfg.board_accuracy) * np.abs(mean["r"]) + cfg.floor_w
               + cfg.se_k * se)
        # against the calibration: what is beyond the meters' stability, in standard errors
        # of the minute's mean (that noise averages out over minutes; a drift does not)
        tol2 = cfg.stability * np.abs(mean["r"]) + cfg.calib_floor_w
        se2 = np.maximum(se, cfg.calib_se_floor_w)
        with np.errstate(invalid="ignore", divide="ignore"):
            # the reference's own white noise, from its second-to-second steps, is not a move
            moves = np.sqrt(np.maximum(var["r"] - sums["step2"] / (2 * sums["pairs"]), 0.0))
        frozen = (judged & (moves > cfg.frozen_ref_sd_w)
                  & (np.sqrt(var["b"]) < cfg.frozen_ratio * moves))
        t0 = minute[starts] * _MINUTE_S
        cap = cfg.cusum_cap * cfg.cusum_h
        e_all = np.full_like(tol, np.nan)
        for i in range(len(starts)):        # one step per minute, vectorised over components
            j = judged[i]
            end = t0[i] + _MINUTE_S
            calibrated = self.calib[2] >= cfg.calib_minutes
            beta = self.calib[0] / np.maximum(self.calib[1], 1e-9)
            e = mean["d"][i] - beta * mean["r"][i]
            e_all[i] = np.where(j & calibrated, e, np.nan)
            x = mean["d"][i] / tol[i]
            up = np.clip(np.stack([x, (e - tol2[i]) / se2[i]]), -cfg.x_clip, cfg.x_clip)
            down = np.clip(np.stack([-x, (-e - tol2[i]) / se2[i]]), -cfg.x_clip, cfg.x_clip)
            jj = np.stack([j, j & calibrated])
            self.s_pos = np.where(jj, np.clip(self.s_pos + up - cfg.cusum_k, 0, cap), self.s_pos)
            self.s_neg = np.where(jj, np.clip(self.s_neg + down - cfg.cusum_k, 0, cap),
                                  self.s_neg)
            self.zero_pos = np.where(jj & (self.s_pos == 0), end, self.zero_pos)
            self.zero_neg = np.where(jj & (self.s_neg == 0), end, self.zero_neg)
            learn = j & ~calibrated & (np.maximum(self.s_pos[0], self.s_neg[0]) == 0)
            self.calib += np.where(learn, [mean["d"][i] * mean["r"][i], mean["r"][i] ** 2,
                                           np.ones_like(e)], 0.0)
            self.win = np.roll(self.win, -1, axis=0)
            self.win[-1] = np.where(j, [mean["b"][i], mean["r"][i]], np.nan)
            still, sd_b, sd_r = self._still()
            now = j & (frozen[i] | still)
            # a minute whose reference does not move says nothing either way: hold the count
            seen = j & ((sd_r > cfg.frozen_ref_sd_w) | (moves[i] > cfg.frozen_ref_sd_w))
            self.frozen_since = np.where(now & (self.frozen == 0), t0[i], self.frozen_since)
            self.frozen = np.where(now, self.frozen + 1, np.where(seen, 0, self.frozen))
            self.last_sd = np.where(j[:, None], np.column_stack([sd_b, sd_r]), self.last_sd)
            self.line = np.concatenate([self.line, line[i:i + 1]])[-cfg.line_window_min:]
            self.line_t = np.r_[self.line_t, t0[i]][-cfg.line_window_min:]
            self._fit_line(end)
        hist = np.stack([np.where(judged, mean["d"], np.nan), mean["r"], tol, e_all, tol2],
                        axis=1)
        self.hist_t = np.concatenate([self.hist_t, t0])[-self.cfg.fit_minutes:]
        self.hist = np.concatenate([self.hist, hist])[-self.cfg.fit_minutes:]

    def _fit_line(self, end: float) -> None:
        """The lines over the window's seconds, one gain per ``line_block_min`` block and one
        offset for all: the offset, its standard error, the newest block's gain and the
        offset's distance beyond ``floor_w`` in standard errors (z), per component."""
        cfg = self.cfg
        block = np.floor(self.line_t / (cfg.line_block_min * _MINUTE_S))
        starts = np.flatnonzero(np.r_[True, block[1:] != block[:-1]])
        sw, sb, sd, sbb, sbd, sdd, n = np.moveaxis(np.add.reduceat(self.line, starts, axis=0),
                                                   1, 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            # per block, with its own gain g: the sums of the offset's normal equation
            has = sbb > 0
            a_j = np.where(has, sw - sb * sb / sbb, 0.0)
            b_j = np.where(has, sd - sb * sbd / sbb, 0.0)
            c_j = np.where(has, sdd - sbd * sbd / sbb, 0.0)
            aa, bb = a_j.sum(axis=0), b_j.sum(axis=0)
            icpt = bb / aa
            dof = n.sum(axis=0) - has.sum(axis=0) - 1
            s2 = np.maximum(c_j.sum(axis=0) - bb * bb / aa, 0.0) / dof
            se = np.sqrt(s2 / aa)
            # each block's gain given the offset, its standard error, and how far the gains
            # part beyond what the meters' stability and that error allow
            g_j = np.where(has, (sbd - icpt * sb) / sbb, np.nan)
            g_se = np.sqrt(s2 / sbb)
            g_mean = np.nansum(g_j * sbb, axis=0) / np.sum(np.where(has, sbb, 0.0), axis=0)
            room = cfg.line_gain_se * g_se
            moved = ((np.nanmax(np.abs(g_j - g_mean) - room, axis=0, initial=-np.inf)
                      > 2 * cfg.stability)
                     | (np.nanmax(np.abs(g_j) - room, axis=0, initial=-np.inf)
                        > cfg.ref_accuracy + cfg.board_accuracy))
            gain = g_j[-1]
            z = (np.abs(icpt) - cfg.floor_w) / se
        # a load that barely moved within its blocks cannot place the offset; the line holds
        # only for meters whose gains are sound: a gain that moved within the window (a gain
        # error's onset or growth) bends the blocks' lines, and one beyond the stated
        # accuracies is a gain error (or a steady load's step, which a block's line takes for
        # a slope of ~1): the offset says nothing then
        fit = (dof > 0) & (aa > 1e-9 * sw.sum(axis=0)) & (se > 0) & ~moved
        self.line_fit = np.where(fit, np.stack([icpt, se, gain, z]), np.nan)
        # since: the end of the last minute whose line lay within floor_w (z <= 0), or the
        # window's start for an offset there from the first minutes on
        held = np.where(np.isfinite(self.line_zero), self.line_zero, self.line_t[0])
        self.line_zero = np.where(fit & (z > 0), held, end)

    @property
    def line_since(self) -> np.ndarray:
        """Per component, since when the line's offset is at watch level or more (NaN: it
        is not, or the line abstains)."""
        with np.errstate(invalid="ignore"):
            up = self.line_fit[3] >= self.cfg.watch_score * self.cfg.line_z
        return np.where(up, self.line_zero, np.nan)

    def _line_finding(self, c: int, name: str) -> Finding | None:
        icpt, se, gain, z = self.line_fit[:, c]
        since = self.line_since[c]
        if not np.isfinite(since):
            return None
        return Finding(name, "sensor_offset", float(z / self.cfg.line_z), float(since),
                       {"offset_w": float(icpt), "offset_se_w": float(se), "gain": float(gain),
                        "offset_z": float(z), "line_minutes": float(len(self.line)),
                        "load_told_apart": 1.0})

    def _still(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Over the last minutes' means: does the board ignore a reference that moves?
        Also the board's and the reference's sd of those means (W)."""
        b, r = self.win[:, 0], self.win[:, 1]
        k = np.sum(np.isfinite(b), axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            db = b - np.nansum(b, axis=0) / k
            dr = r - np.nansum(r, axis=0) / k
            sd_r = np.sqrt(np.nansum(dr * dr, axis=0) / k)
            sd_b = np.sqrt(np.nansum(db * db, axis=0) / k)
            slope = np.nansum(db * dr, axis=0) / np.nansum(dr * dr, axis=0)
        cfg = self.cfg
        still = ((k >= len(self.win) / 2) & (sd_r > cfg.frozen_ref_sd_w)
                 & (np.abs(slope) < cfg.frozen_ratio))
        return still, sd_b, sd_r

    def findings(self) -> tuple[list[Finding | None], list[Finding | None]]:
        """Per component: the board-vs-reference finding (offset or gain) and the frozen-board
        finding (stuck), each None below the watch score."""
        cfg = self.cfg
        out_ref: list[Finding | None] = []
        out_frozen: list[Finding | None] = []
        for c, name in enumerate(self.names):
            ref, line = self._ref_finding(c, name), self._line_finding(c, name)
            # the CUSUM's finding, once conclusive, has the better change point and cause
            if line is not None and (ref is None or (ref.score < 1.0 < line.score)):
                ref = line
            out_ref.append(ref)
            score = self.frozen[c] / cfg.frozen_minutes
            out_frozen.append(None if score < cfg.watch_score else Finding(
                name, "sensor_stuck", float(score), float(self.frozen_since[c]),
                {"frozen_minutes": float(self.frozen[c]),
                 "board_sd_w": float(self.last_sd[c, 0]), "ref_sd_w": float(self.last_sd[c, 1])}))
        return out_ref, out_frozen

    def _ref_finding(self, c: int, name: str) -> Finding | None:
        cfg = self.cfg
        both = np.maximum(self.s_pos[:, c], self.s_neg[:, c])
        k = int(np.argmax(both))                # 0: accuracy band, 1: own calibration
        s = float(both[k])
        score = s / cfg.cusum_h
        if score < cfg.watch_score:
            return None
        pos = self.s_pos[k, c] >= self.s_neg[k, c]
        zero = self.zero_pos[k, c] if pos else self.zero_neg[k, c]
        first_t = self.hist_t[0] if len(self.hist_t) else np.nan
        since = zero if np.isfinite(zero) else first_t
        col = 0 if k == 0 else 3
        sel = (self.hist_t >= since) & np.isfinite(self.hist[:, col, c])
        if not sel.any():
            return None
        d, r = self.hist[sel, col, c], self.hist[sel, 1, c]
        key = (k, float(since), float(self.hist_t[-1]))
        if self._decided.get(c, (None,))[0] != key:     # once per new minute, not per row
            self._decided[c] = (key, decide_offset_gain(d, r, self.hist_t[sel] - since, cfg))
        cause, ev = self._decided[c][1]
        ev = dict(ev)
        ev.update({"cusum": s, "tolerance_w": float(np.nanmean(self.hist[sel, 2 + 2 * k, c])),
                   "ref_mean_w": float(np.mean(r)), "last_diff_w": float(d[-1]),
                   "against_calibration": float(k),
                   "calibration_gain": float(self.calib[0, c] / max(self.calib[1, c], 1e-9))})
        told = ev["load_told_apart"] > 0 and len(d) >= cfg.decide_minutes
        if not (told or len(d) >= cfg.decide_wait_minutes):
            score = min(score, 0.99)        # conclusive only once the cause is told too
        return Finding(name, cause, float(score), float(since), ev)

    def state_dict(self) -> dict:
        return {k: np.array(v).tolist() for k, v in vars(self).items()
                if k not in ("names", "cfg", "_decided")}

    def load_state(self, state: dict) -> None:
        m = len(self.names)
        for k, v in state.items():
            if k not in vars(self) or k in ("names", "cfg", "_decided"):
                raise ValueError(f"reference check state: unknown entry {k!r}")
            shape = {"_pend_t": (-1,), "hist_t": (-1,), "_pend": (-1, 3, m),
                     "hist": (-1, 5, m), "win": (-1, 2, m), "line": (-1, 7, m),
                     "line_t": (-1,)}.get(k, np.shape(getattr(self, k)))
            setattr(self, k, np.asarray(v, dtype=np.float64).reshape(shape))
