"""Processing functions (CamServer signature) and the loading of user functions."""
