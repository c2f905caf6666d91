"""A simulated room of racks under one power tree, in fast mode (no ROS): the room and its
racks (`layout`), their days aggregated to the loop's step (`demand`), the loop with shared
or fixed budgets (`loop`) and what it measures (`metrics`)."""
from rackpower_nodes.sim.room.demand import RackDay, aggregate, rack_day, room_days
from rackpower_nodes.sim.room.layout import (
    DEFAULT_MIX, PRESETS, Room, RoomRack, make_room, preset_actuator, preset_mix)
from rackpower_nodes.sim.room.metrics import RoomResult, format_classes, format_table

__all__ = [
    "DEFAULT_MIX", "PRESETS", "RackDay", "Room", "RoomRack", "RoomResult", "aggregate",
    "format_classes", "format_table", "make_room", "preset_actuator", "preset_mix", "rack_day",
    "room_days",
]
