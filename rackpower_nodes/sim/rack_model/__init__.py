"""Power models of rack components: SPECpower load curves, PSUs, switches, storage, dynamics.

Servers follow a SPECpower_ssj2008 11-point curve (wall power in W at ActiveIdle and at 10 %
.. 100 % target load), interpolated linearly in utilisation. SPECpower measures at the wall
with the power supply the system was tested with, so the curve *is* wall power for that
reference PSU. A server model may name a different installed PSU: the curve is then converted
to DC power through the reference PSU's efficiency and back to wall power through the
installed one (``P_wall = P_dc / eff(P_dc / rating)``). Without an installed PSU the steady
state equals the published curve exactly.

Dynamics on top of the steady curve (all seeded, vectorised over blocks of samples, with
state carried from block to block): a first-order lag of ``lag_tau_s`` from utilisation to
power, a turbo overshoot after utilisation rises (difference of a fast and a slow lag), AR(1)
noise of a few W plus white noise, and rare sub-second fan/turbo spikes. Each settles or
averages out, so the mean power at a steady utilisation stays on the curve.

Parts: :mod:`.checks` (`SimConfigError`, the ``cfg_*`` readers), :mod:`.steady` (the
steady-state models), :mod:`.gpu` (a GPU server's boards, fans and noise: `GpuSpec`) and
:mod:`.dynamics` (filters, `Dynamics`, `PowerStream`).
"""
from rackpower_nodes.sim.rack_model.checks import (
    SimConfigError,
    cfg_float,
    cfg_map,
    cfg_number,
    cfg_numbers,
)
from rackpower_nodes.sim.rack_model.dynamics import (
    Dynamics,
    PowerStream,
    PulseTrain,
    ar1_filter,
    lag_filter,
)
from rackpower_nodes.sim.rack_model.gpu import GpuSpec
from rackpower_nodes.sim.rack_model.steady import (
    LOAD_POINTS,
    HostSpec,
    LoadCurve,
    Psu,
    PsuCurve,
    ServerModel,
    StorageModel,
    SwitchModel,
)

__all__ = [
    "LOAD_POINTS", "Dynamics", "GpuSpec", "HostSpec", "LoadCurve", "PowerStream", "Psu",
    "PsuCurve", "PulseTrain", "ServerModel", "SimConfigError", "StorageModel", "SwitchModel",
    "ar1_filter", "cfg_float", "cfg_map", "cfg_number", "cfg_numbers", "lag_filter",
]
