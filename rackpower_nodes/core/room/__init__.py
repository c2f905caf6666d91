"""Power coordination above one rack: power tree, global-priority division, shrink-first
budgets and the rack's lease (see types.py)."""
