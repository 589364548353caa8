"""The three demos: the lifecycle, the monitoring loop, the edge fleet. They use the public commands and services."""
