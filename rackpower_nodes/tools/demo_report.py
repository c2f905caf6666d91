"""What `make demo` prints: the node graph's topics and diagnostics as a subscriber saw them.

One section per stage of the graph, each from what :mod:`rackpower_nodes.tools.demo` gathered
while it watched: the power_samples stream and current_sensor's diagnostics with the host
telemetry per component (:func:`report_samples`), the forecasts (:func:`report_forecasts`),
the allocations with the BMC caps read back (:func:`report_allocations`), the recorder and
retrain_scheduler (:func:`report_retraining`), and health_monitor with the fault the demo
injected (:func:`report_health`). Printing only: nothing here subscribes.
"""
from __future__ import annotations

import math
import time

from rackpower.msg import (
    AllocationError, HostTelemetry, ModelUpdate, PowerAllocation, PowerForecast)
from rackpower_nodes.tools.monitor import SampleMonitor

__all__ = ["report_allocations", "report_forecasts", "report_health", "report_retraining",
           "report_samples"]


def report_samples(monitor: SampleMonitor, telemetry: HostTelemetry | None) -> None:
    """The power_samples stream, current_sensor's diagnostics, and each component's mean
    power beside its host's newest telemetry."""
    s, d = monitor.stats, monitor.diagnostics
    span = (s.last_receive_s or 0) - (s.first_receive_s or 0)
    p50, p99 = s.latency_percentiles_ms(50, 99)
    print("\n== power_samples, as a subscriber received them ==")
    print(f"batches {s.messages}, samples per channel {s.samples} "
          f"({s.samples / max(span, 1e-9):.0f} frames/s over {span:.1f} s)")
    print(f"frames lost (reported by the node) {s.frames_lost_reported}, "
          f"sequence breaks seen {s.sequence_breaks}")
    print(f"newest-sample-to-subscriber latency p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    print("\n== current_sensor diagnostics ==")
    for key in ("_message", "port_state", "frame_rate_hz", "frames", "crc_errors",
                "header_errors", "sequence_gaps", "frames_lost", "bytes_discarded",
                "last_frame_age_s", "clock_drift_ppm"):
        print(f"  {key.strip('_'):18s} {d.get(key, '?')}")
    hosts = {h.host_id: h for h in telemetry.hosts} if telemetry else {}
    print("\n== per component: mean power (current_sensor) and host telemetry ==")
    print(f"  {'component':10s} {'power W':>8s} {'cpu %':>6s} {'mem %':>6s} {'net rx MB/s':>11s}"
          f"  next scheduled job")
    total = 0.0
    for cid, watts in s.mean_power_w().items():
        total += watts
        h = hosts.get(cid)
        cols = ("", "", "", "")
        if h is not None:
            job = (f"{h.active_job} (running)" if h.active_job else
                   "" if math.isnan(h.next_job_in_s) else
                   f"in {h.next_job_in_s / 3600:.1f} h, ~{h.next_job_expected_util * 100:.0f} %")
            cols = (f"{h.cpu_util * 100:.1f}", f"{h.mem_used_fraction * 100:.1f}",
                    f"{h.net_rx_bps / 1e6:.2f}", job)
        print(f"  {cid:10s} {watts:8.1f} {cols[0]:>6s} {cols[1]:>6s} {cols[2]:>11s}  {cols[3]}")
    print(f"  {'rack total':10s} {total:8.1f}")
    if "controller" in hosts:
        h = hosts["controller"]
        print(f"  controller (psutil): cpu {h.cpu_util * 100:.1f} %, "
              f"mem {h.mem_used_fraction * 100:.1f} %")


def report_forecasts(forecasts: list[PowerForecast]) -> None:
    """How many forecasts the model made and the fallback, inference times, the last one."""
    print("\n== power_forecast ==")
    if not forecasts:
        print("  no forecasts arrived")
        return
    served = [f for f in forecasts if not f.fallback]
    ms = sorted(f.inference_ms for f in forecasts)
    last = forecasts[-1]
    print(f"forecasts {len(forecasts)}, by the model {len(served)}, by the fallback "
          f"{len(forecasts) - len(served)} (warm-up: the model needs a few seconds of history)")
    print(f"model {last.model_name} {last.model_version}; inference p50 "
          f"{ms[len(ms) // 2]:.2f} ms, max {ms[-1]:.2f} ms")
    if last.fallback:
        print(f"  last forecast in fallback: {last.fallback_reason}")
    h = last.horizon_steps
    print(f"  {'component':10s} {'now W':>7s} {'p50 +5s':>8s} {'p90 +5s':>8s} {'p99 +5s':>8s}")
    for c, cid in enumerate(last.channel_ids):
        k = c * h + h - 1
        print(f"  {cid:10s} {last.last_w[c]:7.1f} {last.p50_w[k]:8.1f} {last.p90_w[k]:8.1f} "
              f"{last.p99_w[k]:8.1f}")


def report_allocations(allocations: list[PowerAllocation], errors: list[AllocationError],
                        caps: dict[str, float], diag: dict[str, str]) -> None:
    """The allocations by mode, the newest per component with its BMC cap (`caps`, W) and
    the write latency from pdu_actuator's diagnostics (`diag`), and the corrections."""
    print("\n== power_allocation (pdu_actuator) ==")
    if not allocations:
        print("  no allocations arrived")
        return
    modes: dict[str, int] = {}
    over = 0
    for a in allocations:
        modes[a.mode] = modes.get(a.mode, 0) + 1
        over += sum(a.allocated_w) > a.budget_w
    last = allocations[-1]
    print(f"allocations {len(allocations)} ({', '.join(f'{m} {n}' for m, n in modes.items())}); "
          f"above the budget: {over}; written to the PDUs: {last.pdu_written}")
    if last.mode_reason:
        print(f"  last mode {last.mode}: {last.mode_reason}")
    if "write_latency_ms_p50" in diag:
        print(f"  from a batch to its allocation written to every PDU and BMC: p50 "
              f"{diag['write_latency_ms_p50']} ms, p99 {diag['write_latency_ms_p99']} ms "
              "(the node's diagnostics)")
    print(f"  budget {last.budget_w:.0f} W (breaker {last.breaker_w:.0f} W), allocated "
          f"{last.total_allocated_w:.0f} W, measured {last.total_measured_w:.0f} W, slack "
          f"{last.slack_w:.0f} W; forecast from {last.forecast_model or '-'}")
    print(f"  {'component':10s} {'measured W':>10s} {'forecast W':>10s} {'allocated W':>11s} "
          f"{'BMC cap W':>9s} {'floor':>6s} {'ceiling':>7s} prio")
    for i, cid in enumerate(last.channel_ids):
        cap = f"{caps[cid]:9.1f}" if cid in caps else f"{'-':>9s}"
        print(f"  {cid:10s} {last.measured_w[i]:10.1f} {last.forecast_w[i]:10.1f} "
              f"{last.allocated_w[i]:11.1f} {cap} {last.floor_w[i]:6.0f} "
              f"{last.ceiling_w[i]:7.0f} {last.priority[i]:4d}")
    if caps:
        print(f"  (BMC caps of {len(caps)} servers, read back over Redfish right after the "
              "last allocation: whole watts, rewritten when the allocation moves 5 W or "
              "more)")
    actions: dict[str, int] = {}
    for e in errors:
        actions[e.action] = actions.get(e.action, 0) + 1
    print(f"allocation errors (corrections) {len(errors)}"
          + (f": {', '.join(f'{a} {n}' for a, n in actions.items())}" if errors else ""))


def report_retraining(retrain: dict[str, str], updates: list[ModelUpdate]) -> None:
    """The model updates published and retrain_scheduler's newest diagnostics."""
    print("\n== recorder and retrain_scheduler ==")
    for u in updates:
        print(f"  model_update: {u.model_name} {u.version} ({u.reason})")
    if not retrain:
        print("  no diagnostics from retrain_scheduler")
        return
    print(f"  state {retrain.get('state')}: {retrain.get('detail', '')}")
    print(f"  champion {retrain.get('champion_version')}; last retrain: "
          f"{retrain.get('last_result')}")
    if retrain.get("last_error"):
        print(f"  last error: {retrain['last_error']}")


def report_health(health: dict, injected: dict | None, found: dict | None,
                  diag_levels: dict[str, str]) -> None:
    """health_monitor's newest ComponentHealth per component (`health`: id -> message), the
    fault the demo injected (`injected`: its FaultSpec as a dict and `t_unix`, when it was
    sent) and when it was found (`found`: the first fault message of that component, with
    `t_unix`, when it arrived), and each component's /diagnostics level (`diag_levels`)."""
    print("\n== component_health (health_monitor) ==")
    if injected is None:
        print("  no fault injected")
    else:
        f = injected["fault"]
        print(f"injected: {f['kind']} on {f['component']} at "
              f"{time.strftime('%H:%M:%S', time.gmtime(injected['t_unix']))} UTC")
        if found is None:
            print(f"  NOT FOUND: {f['component']} never reached state fault")
        else:
            m = found["msg"]
            right = ("right cause" if m.cause == f["kind"]
                     else f"WRONG cause (expected {f['kind']})")
            print(f"  found: {m.component_id} fault, cause {m.cause} ({right}; "
                  f"{'sensor' if m.sensor_fault else 'component'} fault), "
                  f"{found['t_unix'] - injected['t_unix']:.1f} s after the injection")
    if not health:
        print("  no component_health arrived")
        return
    print(f"  {'component':10s} {'state':6s} {'score':>6s} {'cause':16s} {'diagnostics':11s} "
          "evidence")
    for cid in sorted(health):
        m = health[cid]
        ev = ", ".join(f"{k} {v:.3g}" for k, v in zip(m.evidence_names, m.evidence_values))
        print(f"  {cid:10s} {m.state:6s} {m.score:6.2f} {m.cause or '-':16s} "
              f"{diag_levels.get(cid, '?'):11s} {ev}")
    learned = any(m.baseline_learned for m in health.values())
    print(f"  (learned baseline: {'yes' if learned else 'no: the physical checks only'})")
