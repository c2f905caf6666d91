"""Hardware behind small interfaces: real implementations and the simulator counterparts."""
