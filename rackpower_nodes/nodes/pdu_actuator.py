"""The `pdu_actuator` lifecycle node: forecasts and measurements in, allocations to the PDUs out.

Allocations are enforced through each PDU outlet's allocation register where the register map
has one, and through the server's power limit on its BMC (Redfish) where
`components.power_cap_url` names one; a component may have both.

Lifecycle:
  - configure: load the register maps, connect to every PDU and BMC and verify it; one that
    does not answer fails the transition (with `autostart`, the node connects on a thread of
    its own, retried every `pdu.retry_s`, and configures once every device answered);
  - activate: allocations are computed and written on every `power_samples` batch (at most
    `control.rate_hz`), and on a watchdog timer when batches stop;
  - deactivate, shutdown and error: the static (nameplate) split is written, the safe state a
    rack can stay in without this node, confirmed by reading every device back (the log
    says what they hold), and writing stops. The last `power_allocation` (latched) then says
    so: mode `inactive`, the static split, what the devices hold, stamped when it stopped.

While active, every allocation register and BMC limit is read back every `pdu.verify_s`; a
value other than the one written is corrected and named in /diagnostics and the log.

The node spins on one thread (the events executor): the control step hands the newest
allocation to a worker thread that writes it (`drivers/pdu_link/`), autostart connects on a
thread of its own, and only lifecycle transitions do (bounded) device work. When the forecast
stream stops for `inputs.forecast_stale_s`, or a PDU stops answering, the controller switches
to safe mode on the next step, reports why, and returns to the requested mode once things
recover.

What needs no rclpy lives below the node: its inputs (`core/actuator_inputs.py`), its health
(`core/actuator_health.py`) and its devices (`drivers/actuator_devices.py`).
"""
from __future__ import annotations

import logging
import math
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from rackpower.msg import AllocationError, PowerAllocation, PowerForecast, PowerSamples
from rackpower_nodes.core.actuator_budget import RackBudgetKeeper
from rackpower_nodes.core.actuator_config import (
    ACTUATOR_PARAMETERS, ActuatorConfig, actuator_config_from_params, check_outlets_in_maps)
from rackpower_nodes.core.actuator_health import ActuatorCounts
from rackpower_nodes.core.actuator_inputs import SampleInputs, forecast_view
from rackpower_nodes.core.allocation import MODES, AllocationController, Decision, ForecastView
from rackpower_nodes.core.forecast.messages import stamp_unix
from rackpower_nodes.core.pdu_map import load_register_map
from rackpower_nodes.drivers.actuator_devices import (
    LinkConnector, actuator_link, cap_range_warnings, configure_failed, leave_static_split)
from rackpower_nodes.drivers.feed_watch import lost_feeds
from rackpower_nodes.drivers.pdu_link import PduLink
from rackpower_nodes.nodes.allocation_msgs import (
    actuator_statuses, allocation_msg, error_msgs, forecast_gap_named, inactive_msg,
    mode_change)
from rackpower_nodes.nodes.main import run_node
from rackpower_nodes.nodes.common import (declare_from_specs, errors_qos,
    forecast_qos, latched_qos, publish_diagnostics, samples_qos)
from rackpower_nodes.nodes.room_msgs import RoomPort, rack_id_of


WATCHDOG_S = 0.05           # the deadline checks' period, s
STEP_ON_BATCH = 0.75        # a batch this many periods after the last step steps


class PduActuatorNode(LifecycleNode):
    """Allocates the rack budget and writes it to the PDUs."""

    def __init__(self, **kwargs):
        super().__init__("pdu_actuator", **kwargs)
        # the driver's PduError already names the cause; pymodbus would repeat it per retry
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        self.config: ActuatorConfig = actuator_config_from_params(
            declare_from_specs(self, ACTUATOR_PARAMETERS))
        cfg = self.config
        # a bad register map is a configuration error: the process exits 2 naming it
        self._maps = {p.name: load_register_map(p.register_map) for p in cfg.pdus}
        # and so is an outlet the map does not have (it would never configure)
        check_outlets_in_maps(cfg, {name: m.outlets for name, m in self._maps.items()})
        # so is an unreadable BMC password file
        self._bmc_password = cfg.power_caps.password() if any(cfg.cap_urls) else ""
        self.controller = AllocationController(cfg.components, cfg.policy, cfg.mode,
                                               feeds=cfg.feeds.plan if cfg.feeds else None)
        self._room = (RackBudgetKeeper(cfg.budget.rack_id or rack_id_of(self.get_namespace()),
                                       cfg.policy.budget_w, cfg.budget.guaranteed_w)
                      if cfg.budget.coordinated else None)
        if self._room is not None:        # until the first grant: the guaranteed share
            self.controller.set_budget(cfg.budget.guaranteed_w)
        self._room_port: RoomPort | None = None
        self._samples = SampleInputs(cfg.names)
        self._forecast: ForecastView | None = None
        self._forecast_rx = -math.inf
        self._last_step = -math.inf
        self._active = False
        self._step_lock = threading.Lock()     # leaving the safe state waits for a step
        self._link: PduLink | None = None
        self._decision: Decision | None = None
        self._counts = ActuatorCounts()
        self._destroyed = False
        self._pending: float | None = None     # perf_counter of a batch not yet stepped on
        self._alloc_pub = None
        self._error_pub = None
        self._control = MutuallyExclusiveCallbackGroup()
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_diagnostics,
                          callback_group=MutuallyExclusiveCallbackGroup())
        self.add_on_set_parameters_callback(self._on_parameters)
        self._ready: PduLink | None = None      # connected by autostart, for on_configure
        self._connector = LinkConnector(
            lambda: actuator_link(cfg, self._maps, self._bmc_password))
        self._auto = (self.create_timer(0.05, self._autostart,
                                        callback_group=MutuallyExclusiveCallbackGroup())
                      if cfg.autostart else None)

    def destroy_node(self) -> None:
        """Leave the safe allocation behind however the process ends (Ctrl-C, SIGTERM)."""
        if getattr(self, "_destroyed", True):     # twice (rclpy's context cleanup), or half-built
            super().destroy_node()
            return
        self._destroyed = True
        self._connector.close()       # on_configure takes (and closes) what it connected
        if (self.context.ok()
                and self._state_machine.current_state[1] in ("inactive", "active")):
            self.trigger_shutdown()                # on_shutdown writes the static split
        if self._link is not None:
            # the context is gone (Ctrl-C, SIGTERM) and with it the lifecycle transitions:
            # write the static split directly
            self._write_safe("shutdown")
            self._teardown()
        super().destroy_node()

    # -- lifecycle --------------------------------------------------------------------------
    def _autostart(self) -> None:
        """Connect on the connector's thread (every pdu.retry_s while a device does not
        answer), then configure with that link and activate; never waits on a device."""
        state = self._state_machine.current_state[1]
        if state == "unconfigured":
            result = self._connector.poll(self.config.retry_s)
            if result is None:
                return
            self._ready, errors = result
            if errors:
                self.get_logger().error(configure_failed(errors, self.config.retry_s),
                                        throttle_duration_sec=30.0)
                return
            if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                return
            state = "inactive"
        if state == "inactive":
            self.trigger_activate()
        if self._state_machine.current_state[1] != "unconfigured":
            self._auto.cancel()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        cfg = self.config
        link, self._ready = self._ready, None     # autostart connected it already
        if link is None:              # bounded: every request has a timeout (pdu.timeout_s)
            link = actuator_link(cfg, self._maps, self._bmc_password)
            errors = link.connect_all()
            if errors:
                self.get_logger().error(configure_failed(
                    errors, cfg.retry_s if cfg.autostart else None), throttle_duration_sec=30.0)
                link.close()
                return TransitionCallbackReturn.FAILURE
        self._link = link
        for text in cap_range_warnings(link, cfg.components):
            self.get_logger().warning(text)
        self._alloc_pub = self.create_lifecycle_publisher(
            PowerAllocation, "power_allocation", latched_qos())
        self._error_pub = self.create_lifecycle_publisher(
            AllocationError, "allocation_error", errors_qos())
        self._subs = [
            self.create_subscription(PowerSamples, "power_samples", self._on_samples,
                                     samples_qos(0.25), callback_group=self._control),
            self.create_subscription(PowerForecast, "power_forecast", self._on_forecast,
                                     forecast_qos(), callback_group=self._control)]
        if self._room is not None:     # rack_budget in, rack_demand out (docs/room.md)
            self._room_port = RoomPort(self, self._room, self.controller, self._control,
                                       link.held_w())
        self._watchdog = self.create_timer(WATCHDOG_S, self._on_watchdog,
                                           callback_group=self._control)
        caps = sum(1 for u in cfg.cap_urls if u)
        self.get_logger().info(
            f"configured: {len(cfg.pdus)} PDU(s), {caps} BMC power cap(s), "
            f"{len(cfg.components)} components, budget {cfg.policy.budget_w:.0f} W" + (
                f", shared as rack {self._room.rack}" if self._room is not None else ""))
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._link.start()
        self._active = True
        self.get_logger().info(f"active, mode {self.controller.mode}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._write_safe("deactivate")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_cleanup(state)       # the managed publishers first
        self._teardown()
        return result

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._write_safe("shutdown")
        result = super().on_shutdown(state)      # the managed publishers first
        self._teardown()
        return result

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._write_safe("error")
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def _write_safe(self, why: str) -> str:
        """Leave the static split in the PDUs (safe without this node), confirm it by reading
        every device back, and say what they hold: logged, returned, and published as the last
        allocation (mode inactive) while the publisher is up, so the latched one is true."""
        with self._step_lock:          # a control step under way publishes before this
            self._active = False
        if self._link is None:
            return f"{why}: no devices connected"
        if self._room is not None:     # no more than the room counts on, with nobody talking
            self._set_budget(min(self.controller.budget_w, self._room.guaranteed_w))
        confirmed, text = leave_static_split(self._link, self.controller.static_allocation(),
                                             self.controller.budget_w, why)
        if confirmed:
            self.get_logger().info(text)
        else:
            self.get_logger().error(text)
        pub = self._alloc_pub
        if pub is not None and pub.is_activated and self.context.ok():
            pub.publish(inactive_msg(
                self.config, self.controller, self._link, text, confirmed,
                self._samples.measured(time.monotonic(), self.config.samples_stale_s),
                self.get_clock().now().to_msg()))
        return text

    def _teardown(self) -> None:
        for sub in getattr(self, "_subs", []):
            self.destroy_subscription(sub)
        self._subs = []
        if getattr(self, "_watchdog", None) is not None:
            self.destroy_timer(self._watchdog)
            self._watchdog = None
        for pub in (self._alloc_pub, self._error_pub):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self._alloc_pub = self._error_pub = None
        if self._room_port is not None:
            self._room_port.destroy()
            self._room_port = None
        if self._link is not None:
            self._link.close()
            self._link = None

    # -- inputs -----------------------------------------------------------------------------
    def _on_forecast(self, msg: PowerForecast) -> None:
        self._forecast = forecast_view(msg, self.config.names)
        self._forecast_rx = time.monotonic()

    def _on_samples(self, msg: PowerSamples) -> None:
        """A batch is fresh when its header.stamp advanced over the previous batch's and it
        holds a finite value for one of our components; only a fresh batch updates the
        measurements and the power_samples deadline (a stuck board clock or an all-NaN
        stream ends in safe mode like a dead sensor): :class:`SampleInputs`."""
        t_ref = time.perf_counter()
        now = time.monotonic()
        self._samples.update(stamp_unix(msg.header.stamp), msg.channel_ids, msg.mean_power_w,
                             now)
        if now - self._last_step >= STEP_ON_BATCH / self.config.rate_hz:
            self._step(t_ref)
        elif self._pending is None:
            self._pending = t_ref       # the watchdog steps on it when the period is up

    def _on_watchdog(self) -> None:
        """Steps when batches stop, and at once when power_samples pass their deadline, the
        forecast stream goes stale or a PDU drops, so safe mode starts within a watchdog
        period (50 ms) of any of them."""
        now = time.monotonic()
        if self._pending is not None and now - self._last_step >= 0.95 / self.config.rate_hz:
            self._step(self._pending)
            return
        if now - self._last_step >= 1.5 / self.config.rate_hz:
            self._step(time.perf_counter())
            return
        d = self._decision
        if d is None or d.mode == "safe":
            return
        if now - self._samples.fresh_t > self.config.samples_stale_s:
            self._step(time.perf_counter())
            return
        if self.controller.mode != "proactive":
            return
        stale = now - self._forecast_rx > self.config.forecast_stale_s
        if stale or (self._link is not None and not self._link.health()[0]):
            self._step(time.perf_counter())

    def _set_budget(self, budget_w: float) -> None:
        """Allocate and write within `budget_w` (W) from now on."""
        self.controller.set_budget(budget_w)
        if self._link is not None:
            self._link.budget_w = float(budget_w)

    # -- the control step -------------------------------------------------------------------
    def _step(self, t_ref: float) -> None:
        with self._step_lock:
            if not self._active or self._link is None:
                return
            try:
                self._control_step(t_ref)
            except Exception as exc:    # a bug must not stop the PDUs holding a safe split
                self._counts.failures += 1
                self.get_logger().error(f"control step failed ({exc!r}); writing the static "
                                        "split", throttle_duration_sec=10.0)
                if self._room is not None:   # the lease may have run out: the room's share
                    self._set_budget(min(self.controller.budget_w, self._room.guaranteed_w))
                self._link.submit(self.controller.static_allocation(), t_ref)

    def _control_step(self, t_ref: float) -> None:
        cfg = self.config
        now = time.monotonic()
        self._last_step = now
        self._pending = None
        measured = self._samples.measured(now, cfg.samples_stale_s)
        forecast = self._forecast
        if forecast is not None and now - self._forecast_rx > cfg.forecast_stale_s:
            forecast = None
        if self._room_port is not None:     # as the lease will be by the next step (<= 1.5
            # periods away: the watchdog), so the fallback is in force within the lease
            self._set_budget(self._room_port.budget_w(now + 1.5 / cfg.rate_hz))
        pdu_ok, pdu_reason = self._link.health()
        before = self._decision.mode if self._decision else None
        age = now - self._samples.fresh_t
        why = self._samples.fault or "no batch received"
        decision = self.controller.step(
            time.time(), measured, forecast, pdu_ok=pdu_ok, pdu_reason=pdu_reason,
            samples_age_s=age, samples_reason=(f"{why} for {age:.2f} s" if math.isfinite(age)
                                               else f"{why} since the start"),
            in_force_w=self._link.held_w(),      # pinned is judged by what the devices hold
            lost_feeds=lost_feeds(cfg.feeds, self._link))   # its contingency at once
        if forecast is None and self._forecast is not None:
            decision = forecast_gap_named(decision, now - self._forecast_rx)
        self._decision = decision
        self._counts.steps += 1
        text = mode_change(before, decision)
        if text:
            self._counts.last_mode_change = text
            # at most one line a second each way, so a flapping input cannot flood the log
            # while a fault a few seconds after the last one is still logged
            if decision.mode == "safe":
                self._counts.safe_entries += 1
                self.get_logger().warning(text, throttle_duration_sec=1.0)
            else:
                self.get_logger().info(text, throttle_duration_sec=1.0)
        self._link.submit(decision.allocated_w, t_ref)
        self._publish(decision, measured, forecast)

    def _publish(self, d: Decision, measured: np.ndarray, forecast: ForecastView | None) -> None:
        held = self._link.held_w()
        msg = allocation_msg(self.config, d, measured, forecast, held, self._link.last_written,
                             self.controller.budget_w, self.get_clock().now().to_msg())
        self._alloc_pub.publish(msg)
        for err in error_msgs(d, msg):
            self._error_pub.publish(err)
            self._counts.corrections += 1
        if self._room_port is not None:
            self._room_port.report(held, d.demand_w, forecast)

    # -- parameters and diagnostics ---------------------------------------------------------
    def _on_parameters(self, params) -> SetParametersResult:
        for p in params:
            if p.name == "mode":
                if p.value not in MODES:
                    return SetParametersResult(
                        successful=False,
                        reason=f"mode = {p.value!r}: expected one of {', '.join(MODES)}")
                self.controller.set_mode(str(p.value))
                self.get_logger().info(f"mode set to {p.value}")
        return SetParametersResult(successful=True)

    def _publish_diagnostics(self) -> None:
        publish_diagnostics(self, self._diag_pub, actuator_statuses(
            self.get_fully_qualified_name(), self._state_machine.current_state[1],
            self.controller, self._decision, self._counts, self._link))


def main(args=None) -> int:
    return run_node(PduActuatorNode, "pdu_actuator", args, threads=1)


if __name__ == "__main__":
    import sys

    sys.exit(main())
