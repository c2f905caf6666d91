"""Small simulated racks for the retraining tests: the shipped simulator config cut to four
servers, their runs written as rosbag2 bags, and a champion LSTM trained and promoted.

Sizes keep a pipeline run short: 4 servers at 2 Hz, 1 s model steps, a 16-wide LSTM for 3
epochs (SPEC, LSTM).
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import yaml
from helpers import REPO

from rackpower_nodes.core import retrain as rt
from rackpower_nodes.core.forecast.features import WindowSpec, build_windows, split_by_time
from rackpower_nodes.core.forecast.forecaster import LstmForecaster, LstmParams
from rackpower_nodes.core.forecast.registry import save_model
from rackpower_nodes.core.model_registry import ModelRegistry
from rackpower_nodes.sources.bags import message_typestore

SPEC = WindowSpec(step_s=1.0, history_steps=16, horizon_steps=10, coarse=(5,), stride=2)
SPEC_DOC = {"step_s": 1.0, "history_steps": 16, "horizon_steps": 10, "coarse": [5], "stride": 2}
LSTM = {"hidden_size": 16, "max_epochs": 3, "batch_size": 128, "patience": 2}
SERVERS = ("srv01", "srv04", "srv07", "srv10")
NS = "/rack_rt"

__all__ = ["LSTM", "NS", "SERVERS", "SPEC", "SPEC_DOC", "offpeak_not_now", "sim_config",
           "train_champion", "write_sim_bag"]


def sim_config(level: tuple[float, float] = (0.15, 0.2), start: str = "2024-03-04T00:00:00Z",
               batch_job: bool = False) -> dict:
    """The shipped simulator config cut to SERVERS, no switches/storage, every workload's
    diurnal level set to ``level`` (night, peak); ``batch_job`` adds a job at 0.9 util."""
    raw = yaml.safe_load((REPO / "config" / "rack_sim.yaml").read_text())
    raw = copy.deepcopy(raw)
    raw["components"] = [c for c in raw["components"] if c["name"] in SERVERS]
    raw["start"] = start
    raw["schedule"] = {"jobs": []}
    for w in raw["workloads"].values():
        w["diurnal"].update(night=level[0], peak=level[1])
    if batch_job:
        raw["workloads"]["batch"]["diurnal"].update(night=0.9, peak=0.95)
    return raw


def write_sim_bag(path: Path, data, errors=(), namespace: str = NS) -> Path:
    """An MCAP rosbag2 bag of ``data`` written with rosbags' Writer, as `ros2 bag record`
    would: 1 s PowerSamples batches, 1 Hz HostTelemetry and ``errors`` (t, component, error_w)
    as AllocationError messages."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import get_types_from_msg

    store = message_typestore()
    store.register(get_types_from_msg((REPO / "msg" / "AllocationError.msg").read_text(),
                                      "rackpower/msg/AllocationError"))
    T = store.types
    rate = int(data.rate_hz)
    volts = 230.0

    def header(t: float):
        ns = round(t * 1e9)
        return T["std_msgs/msg/Header"](
            stamp=T["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9),
            frame_id="rack")

    msgs = []
    seconds = len(data.power_w) // rate
    mem_total = data.meta["mem_total_bytes"]
    for s in range(seconds):
        t = data.start_unix + s
        p = data.power_w[s * rate:(s + 1) * rate].T.astype(np.float32)       # (m, rate)
        cur = (p / volts).astype(np.float32)
        msg = T["rackpower/msg/PowerSamples"](
            header=header(t), sample_period_s=1.0 / rate, sample_count=rate,
            first_sequence=s * rate, first_board_time_us=s * 1_000_000,
            channel_ids=list(data.names), current_a=cur.reshape(-1),
            voltage_v=np.full(len(data.names), volts, np.float32),
            mean_power_w=p.mean(axis=1).astype(np.float32),
            peak_power_w=p.max(axis=1).astype(np.float32), total_power_w=float(p.mean(1).sum()),
            frames_lost=0)
        msgs.append((t, 0, store.serialize_cdr(msg, msg.__msgtype__)))
        hosts = []
        for h, name in enumerate(data.hosts):
            tel = {f: float(v[s, h]) for f, v in data.telemetry.items()}
            hosts.append(T["rackpower/msg/HostMetrics"](
                host_id=name, up=True, stale=False, age_s=0.5, last_error="",
                cpu_util=tel["cpu_util"], mem_used_fraction=tel["mem_used_bytes"] / mem_total[h],
                mem_used_bytes=tel["mem_used_bytes"], net_rx_bps=tel["net_rx_bytes_per_s"],
                net_tx_bps=tel["net_tx_bytes_per_s"], disk_read_bps=tel["disk_read_bytes_per_s"],
                disk_write_bps=tel["disk_write_bytes_per_s"], active_job="",
                next_job_in_s=math.nan, next_job_expected_util=0.0, next_job_duration_s=0.0))
        tmsg = T["rackpower/msg/HostTelemetry"](
            header=header(t + 1.0), hosts=hosts, hour_of_day=0.0, day_of_week=0,
            is_weekend=False, time_of_day_sin=0.0, time_of_day_cos=1.0, day_of_week_sin=0.0,
            day_of_week_cos=1.0)
        msgs.append((t + 1.0, 1, store.serialize_cdr(tmsg, tmsg.__msgtype__)))
    for t, comp, err in errors:
        emsg = T["rackpower/msg/AllocationError"](
            header=header(t), channel_id=comp, mode="proactive", predicted_w=0.0,
            actual_w=float(err), allocated_w=0.0, new_allocated_w=0.0, error_w=float(err),
            action="raised_from_slack", model_version="test")
        msgs.append((t, 2, store.serialize_cdr(emsg, emsg.__msgtype__)))
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = [writer.add_connection(f"{namespace}/{topic}", f"rackpower/msg/{typ}",
                                       typestore=store)
                 for topic, typ in (("power_samples", "PowerSamples"),
                                    ("host_telemetry", "HostTelemetry"),
                                    ("allocation_error", "AllocationError"))]
        for t, c, raw in sorted(msgs, key=lambda m: (m[0], m[1])):
            writer.write(conns[c], round(t * 1e9), raw)
    return path


def train_champion(series, registry: ModelRegistry, served: bool = False, params=None
                   ) -> tuple[LstmForecaster, str]:
    """The model in service: an LSTM fitted on ``series`` (last 10 min held out), promoted;
    ``served``: the served forecaster over persistence, EWMA and that LSTM instead (``params``:
    its ServedParams, the defaults when None)."""
    ws = build_windows(series, SPEC)
    train, _ = rt.holdout_split(ws, 600.0)
    fit_on, val = split_by_time(train, 0.85)
    model = LstmForecaster(LstmParams(threads=1, **LSTM)).fit(fit_on, val)
    if served:
        from rackpower_nodes.core.forecast.baselines import EwmaForecaster, PersistenceForecaster
        from rackpower_nodes.core.forecast.challengers import ServedForecaster
        from rackpower_nodes.core.forecast.peak import class_of
        model = ServedForecaster(params, members={"persistence": PersistenceForecaster(),
                                          "ewma": EwmaForecaster(), "lstm": model}).fit(
            fit_on, val, class_of)
    entry = registry.register(save_model(model, registry.root / "incoming"),
                              {"sims": [{"seed": 1}]}, {})
    registry.promote(entry["version"], "initial")
    return model, entry["version"]


def offpeak_not_now() -> list[str]:
    """An off-peak window (UTC, the scheduler's default offset) that starts 11 h from now and
    lasts an hour: a live scheduler under test never starts a retrain of its own in a run,
    whatever the time of day (the shipped 01:00-05:00 made one start when the suite ran at
    night, and `~/retrain_now` then answered "a retrain job is running")."""
    import time

    start = (int(time.time()) // 60 + 11 * 60) % (24 * 60)
    return [f"{start // 60:02d}:{start % 60:02d}-{(start + 60) // 60 % 24:02d}:{start % 60:02d}"]
