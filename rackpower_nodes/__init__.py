"""rackpower: predictive power allocation for a server rack (ROS 2 nodes and pure core)."""
