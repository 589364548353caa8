"""The control-plane side of the edge fleet: signed bundles, enrolled devices, phased rollouts.

The device agent (`modelyard.edge`) talks to it over HTTP only (modelyard/edge/PROTOCOL.md).
"""
