"""``python -m rackpower_nodes.sim.sensor_board``: the ``rackpower-board-sim`` command."""
import sys

from rackpower_nodes.sim.sensor_board.cli import main

sys.exit(main())
