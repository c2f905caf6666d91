"""Pure, ROS-independent building blocks of rackpower.

Nothing in this package imports rclpy, so it can be unit-tested and reused outside a ROS graph.
"""
