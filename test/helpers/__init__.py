"""What the tests share: paths, simulated racks and devices, data, and the fixtures of one
folder's files (fixtures that several test folders use live in test/conftest.py).

Test files import from here (`from helpers.rack import Rack`), never from another test file;
`test/` is on sys.path through `pythonpath` in pyproject.toml's pytest options.

- `helpers.rack`: the `pdu_actuator` node's test rack (a sensor and predictor stand-in over
  DDS), its parameters and two simulated Modbus PDUs;
- `helpers.devices`: foreign writers and readers of the simulated PDUs and Redfish BMCs, an
  HTTP server that sends any body, and the client timeout for devices on loopback;
- `helpers.sensor`: the `current_sensor` node's parameters against the board emulator;
- `helpers.retrain`: small simulated racks, their bags and a trained champion model;
- `helpers.series`: small component series for the forecast data and reader tests;
- `helpers.graph`: a watcher that tells when a launched graph is up;
- `helpers.allocation`: small racks and forecasts for the allocation controller's tests;
- `helpers.redfish`: the simulated BMC fixtures and curl helpers of the Redfish tests;
- `helpers.recorder`: a sample source, a recorder process and bag readers;
- `helpers.power_caps`: the BMC limits of a simulated rack;
- `helpers.slurm`: a real Slurm cluster (munged, slurmctld, several slurmd) on loopback.
"""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]          # the checkout: test/helpers/ is two below
SHARED_DATA = REPO.parent / "shared" / "data"       # data sets beside the checkout

__all__ = ["REPO", "SHARED_DATA"]
