"""The cluster coordinator: one CamServer-compatible front for many nodes (docs/cluster.md)."""
