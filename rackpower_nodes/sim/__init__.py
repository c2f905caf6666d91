"""Simulators of rackpower hardware (sensor board, rack) for tests, demos and benchmarks."""
