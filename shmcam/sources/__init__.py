"""Camera sources: whatever delivers frames (simulation, EPICS, bsread, files) for a ring."""
