"""Rack simulator: configuration, the block generator, live use and fast-mode files.

:func:`load_config` parses and validates ``config/rack_sim.yaml`` (the office day) or
a preset (:data:`PRESETS`, :func:`preset_config`: ``office``, ``ai``, ``mixed``).
:class:`RackSimulator` serves a live driver (:meth:`~RackSimulator.step`,
:meth:`~RackSimulator.state_at`, :meth:`~RackSimulator.current_source` for the sensor-board
emulator, :meth:`~RackSimulator.host_state`); :func:`generate` produces days of data at once as a
:class:`SimData`, saved as compressed ``.npz`` plus a JSON sidecar (layout below).

Both paths run the same engine: time advances in blocks of whole seconds, every component
draws from generators seeded by ``SeedSequence([seed, component index])``, and filter state is
carried from block to block, so a seed always gives the same samples.

Files written by :meth:`SimData.save` into a folder:

- ``rack_sim.npz`` (``numpy.savez_compressed``): ``power_w`` float32 (samples, components),
  wall power in W at ``t = k / rate_hz`` s after the start; ``util`` float32 (samples,
  components), utilisation 0..1 (servers: CPU, storage: IO, switches: traffic); and for each
  field of :data:`~rackpower_nodes.sim.workload.TELEMETRY_FIELDS` a float32 array
  ``telemetry_<field>`` (seconds, hosts), the mean over ``[s, s + 1)`` s.
- ``telemetry_app_requests_per_s`` (runs with a ``scheduler:``): each host's offered
  inference request rate (req/s), and ``rack_sim_jobs.json``: the scheduler's job history,
  one :class:`~rackpower_nodes.core.workload_events.JobRecord` per row (NaN as null).
- ``rack_sim_faults.json``: the injected faults (ground truth), a JSON list of
  :meth:`~rackpower_nodes.sim.faults.FaultSpec.as_dict` (``failure_s`` null = never); ``[]``
  for a fault-free run. :attr:`SimData.power_w` is the true wall power (component faults
  included), :attr:`SimData.board_power_w` what the board reads (sensor faults included).
- ``rack_sim.json``: ``format``, ``names``, ``kinds``, ``hosts``, ``rate_hz``, ``start_unix``,
  ``start_iso``, ``seed``, ``hours``, electrical limits (``nominal_v``, ``breaker_a``,
  ``breaker_w``, ``derating``, ``budget_w``), ``pdu_outlets`` and the full ``config``.

Parts: :mod:`.config` (the YAML and `RackConfig`), :mod:`.data` (`SimData`, its files,
`HostState`), :mod:`.engine` (the block generator and `generate`) and :mod:`.simulator`
(`RackSimulator`, `RackState`).
"""
from rackpower_nodes.sim.rack_model import SimConfigError
from rackpower_nodes.sim.rack_sim.config import (
    DEFAULT_CONFIG,
    PRESETS,
    ComponentSpec,
    RackConfig,
    load_config,
    preset_config,
)
from rackpower_nodes.sim.rack_sim.data import APP_RATE_FIELD, HostState, SimData
from rackpower_nodes.sim.rack_sim.engine import generate
from rackpower_nodes.sim.rack_sim.simulator import RackSimulator, RackState

__all__ = [
    "APP_RATE_FIELD", "DEFAULT_CONFIG", "PRESETS", "ComponentSpec", "HostState", "RackConfig",
    "RackSimulator", "RackState", "SimConfigError", "SimData", "generate", "load_config",
    "preset_config",
]
