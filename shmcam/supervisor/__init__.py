"""The node supervisor: instances, config store and the CamServer-compatible REST API."""
