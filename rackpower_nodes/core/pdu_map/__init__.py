"""A PDU's Modbus register map as configuration: where each per-outlet value lives and how
it is encoded. Pure data and numpy codecs; no pymodbus import.

The parts: `register_map` (the map, its YAML format, presets and loading), `points` (points,
identity checks and the validation of their specs) and `codec` (register codecs and request
planning). This package re-exports their public names.
"""
from rackpower_nodes.core.pdu_map.codec import (
    READ_LIMITS, TYPES, WRITE_LIMITS, decode_words, encode_words, plan_blocks)
from rackpower_nodes.core.pdu_map.points import (
    BIT_TABLES, DEVICE_POINTS, POINTS, REGISTER_TABLES, WRITABLE_TABLES, IdentityCheck, Point)
from rackpower_nodes.core.pdu_map.register_map import (
    PRESET_DIR, RegisterMap, load_register_map, preset_names)

__all__ = [
    "BIT_TABLES", "DEVICE_POINTS", "IdentityCheck", "POINTS", "Point", "PRESET_DIR",
    "REGISTER_TABLES",
    "READ_LIMITS", "RegisterMap", "TYPES", "WRITABLE_TABLES", "WRITE_LIMITS", "decode_words",
    "encode_words", "load_register_map", "plan_blocks", "preset_names",
]
