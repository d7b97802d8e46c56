"""A generic Channel Access camera: `<source>:FPICTURE` (the image waveform), `:WIDTH`,
`:HEIGHT`, and `:INIT`, which reads "INIT" while the camera is initialised (CamServer's
`epics` source). Width and height are monitored, so a resize is followed frame by frame.
Offline and not initialised, the camera says so in CamServer's words ("Camera with prefix X
is offline", "... is not initialized") and waits."""

from __future__ import annotations

import numpy as np

from .ca import CaCamera, not_initialized


class EpicsSource(CaCamera):
    """Config: `source` (the PV prefix); `dtype` to read the pixels as another type of the
    same size (default: CA's type, signed integers read as unsigned: cameras count photons).
    Pulse ids are counted (from the clock, never reset by a reconnect); timestamps are the
    IOC's."""

    PVS = {"image": ":FPICTURE", "width": ":WIDTH", "height": ":HEIGHT", "init": ":INIT"}

    def __init__(self, config: dict, context=None):
        self._dtype = np.dtype(config["dtype"]) if config.get("dtype") else None
        super().__init__(config, context)

    def not_ready(self) -> str | None:
        return not_initialized(self.prefix, self.value("init", as_string=True))

    def dtype(self, value: np.ndarray) -> np.dtype:
        return self._dtype or super().dtype(value)
