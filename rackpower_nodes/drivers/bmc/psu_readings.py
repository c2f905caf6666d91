"""The PSUs' own meters as a BMC reports them: `parse_power_supplies` of a Redfish Power resource.

Pure. The legacy Power resource (DMTF Power.v1_7_1, `/redfish/v1/Chassis/<id>/Power`) lists
the chassis' power supplies in `PowerSupplies[]`; each carries its PMBus meters' readings:
`PowerInputWatts` (READ_PIN) and `PowerOutputWatts` (READ_POUT; BMCs from before Power.v1_5
report it as `LastPowerOutputWatts`, which is read where the newer one is absent). The health
model wants the component's sums (`HealthFrame.psu_in_w` / `psu_out_w`); each PSU's own
readings are kept beside them. A document that cannot give both sums is refused with every
problem found, named (the property, the PSU, the value): no `PowerSupplies`, a PSU reported
absent, a missing or null reading, one that is not a finite number >= 0 W.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["PsuReading", "parse_power_supplies"]

_OUTPUTS = ("PowerOutputWatts", "LastPowerOutputWatts")


@dataclass(frozen=True)
class PsuReading:
    """One read of a chassis' PSU meters: the sums over its PSUs (W) and each PSU's
    ``(MemberId, input W, output W)``."""

    input_w: float
    output_w: float
    psus: tuple[tuple[str, float, float], ...]


def _watts(psu: dict, names: tuple[str, ...], where: str, problems: list[str]) -> float:
    """The first of ``names`` present in ``psu``, checked; NaN (and a problem) otherwise."""
    name = next((n for n in names if n in psu), None)
    if name is None:
        problems.append(f"{where} has no {' or '.join(names)}")
        return math.nan
    value = psu[name]
    if value is None:
        problems.append(f"{where}.{name} is null (not read by the BMC)")
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.append(f"{where}.{name} is {value!r}, expected a number of W")
        return math.nan
    if not (math.isfinite(value) and value >= 0):
        problems.append(f"{where}.{name} is {value!r}, expected a finite number >= 0 W")
        return math.nan
    return float(value)


def parse_power_supplies(doc: dict) -> PsuReading:
    """The PSU readings of a Power resource ``doc`` (parsed JSON); ValueError naming every
    problem (module docstring)."""
    psus = doc.get("PowerSupplies") if isinstance(doc, dict) else None
    if not isinstance(psus, list):
        raise ValueError("no PowerSupplies in the Power resource: the BMC reports no PSU "
                         "meters" if psus is None else
                         f"PowerSupplies is {psus!r}, expected an array of power supplies")
    if not psus:
        raise ValueError("PowerSupplies is empty: the BMC reports no PSU meters")
    problems: list[str] = []
    out: list[tuple[str, float, float]] = []
    for i, psu in enumerate(psus):
        where = f"PowerSupplies[{i}]"
        if not isinstance(psu, dict):
            problems.append(f"{where} is {psu!r}, expected an object")
            continue
        member = str(psu.get("MemberId", i))
        label = psu.get("Name")
        if isinstance(label, str) and label:
            where += f" ({label})"
        status = psu.get("Status")
        if isinstance(status, dict) and status.get("State") == "Absent":
            problems.append(f"{where} is absent (Status.State Absent): the sum would miss "
                            f"a supply")
            continue
        out.append((member, _watts(psu, ("PowerInputWatts",), where, problems),
                    _watts(psu, _OUTPUTS, where, problems)))
    if problems:
        raise ValueError("; ".join(problems))
    return PsuReading(math.fsum(p[1] for p in out), math.fsum(p[2] for p in out), tuple(out))
