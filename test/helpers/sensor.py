"""The `current_sensor` node's parameters for the sensor-board emulator: a 16-channel board at
1 kHz, 1 mA per count, three components (srv01, srv02, tor-a on board channels 3, 0, 15)."""
from __future__ import annotations

import yaml

CHANNELS = 16
COMPONENTS = ["srv01", "srv02", "tor-a"]
BOARD_INDEX = [3, 0, 15]
SCALE = 0.001                                   # A per count

__all__ = ["BOARD_INDEX", "CHANNELS", "COMPONENTS", "SCALE", "rack_board_params",
           "sensor_params_file"]


def sensor_params_file(tmp_path, port: str, **extra) -> str:
    """A parameter file for the node reading the board at `port` (a pty path), written under
    `tmp_path`; `extra` overrides single parameters as `section__name=value`."""
    params = {
        "serial": {"port": port},
        "board": {"channels": CHANNELS, "frame_rate_hz": 1000.0},
        "channels": {"components": COMPONENTS, "board_index": BOARD_INDEX,
                     "scale_a_per_count": [SCALE]},
        "voltage": {"nominal_v": [230.0]},
        "reconnect": {"initial_backoff_s": 0.05, "max_backoff_s": 1.0},
    }
    for key, value in extra.items():
        section, name = key.split("__")
        params.setdefault(section, {})[name] = value
    path = tmp_path / "sensor.yaml"
    path.write_text(yaml.safe_dump({"/**/current_sensor": {"ros__parameters": params}}))
    return str(path)


def rack_board_params(port: str, names) -> dict:
    """`current_sensor`'s parameters for the live simulator's board (`LiveRack` with
    `board_channels=16, board_rate_hz=500.0`): the rack's components `names` on channels 0,
    1, ... in order, 1 mA per count."""
    return {"serial": {"port": port}, "board": {"channels": CHANNELS, "frame_rate_hz": 500.0},
            "channels": {"components": list(names), "board_index": list(range(len(names))),
                         "scale_a_per_count": [SCALE]}}
