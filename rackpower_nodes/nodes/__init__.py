"""The six node executables, one module each; `common` holds the ROS helpers they share,
`main` their process runner and `entry` their console-script entry points."""
