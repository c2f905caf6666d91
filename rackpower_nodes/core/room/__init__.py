"""Power coordination above one rack: power tree, global-priority division, shrink-first
budgets and the rack's lease (see types.py)."""
from rackpower_nodes.core.room.divide import Division, divide, priority_order_violations
from rackpower_nodes.core.room.handshake import ShrinkFirst
from rackpower_nodes.core.room.lease import BudgetLease
from rackpower_nodes.core.room.summary import committed_w, rack_demand
from rackpower_nodes.core.room.tree import PowerTree, RackSpec, TreeLevel, load_power_tree
from rackpower_nodes.core.room.types import BUDGET_SOURCES, RackDemand, RackGrant

__all__ = ["BUDGET_SOURCES", "BudgetLease", "Division", "PowerTree", "RackDemand", "RackGrant",
           "RackSpec", "ShrinkFirst", "TreeLevel", "committed_w", "divide", "load_power_tree",
           "priority_order_violations", "rack_demand"]
