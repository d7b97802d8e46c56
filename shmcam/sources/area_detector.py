"""An EPICS areaDetector IOC through its standard-arrays plugin: `<source>:image1:ArrayData`,
its ArraySize0_RBV (width) and ArraySize1_RBV (height), ArrayCounter_RBV (CamServer's; or
UniqueId_RBV) as the pulse id, and `<source>:cam1:Acquire`, `DataType`, `ColorMode` for state
and pixel type.

areaDetector serves unsigned data in the signed CA type of the same size (UInt16 as SHORT):
such an array is viewed as the unsigned type without a copy.
"""

from __future__ import annotations

import numpy as np

from .ca import CaCamera
from .config import PULSE_ID_PVS

DATA_TYPES = {
    "Int8": np.int8,
    "UInt8": np.uint8,
    "Int16": np.int16,
    "UInt16": np.uint16,
    "Int32": np.int32,
    "UInt32": np.uint32,
    "Int64": np.int64,
    "UInt64": np.uint64,
    "Float32": np.float32,
    "Float64": np.float64,
}


class AreaDetectorSource(CaCamera):
    """Config: `source` (the IOC prefix, e.g. "13SIM1"), `pulse_id_pv` (ArrayCounter_RBV, the
    default, or UniqueId_RBV). Online while the detector acquires in Mono colour mode."""

    PVS = {
        "image": ":image1:ArrayData",
        "width": ":image1:ArraySize0_RBV",
        "height": ":image1:ArraySize1_RBV",
        "acquire": ":cam1:Acquire",
        "data_type": ":cam1:DataType",
        "color_mode": ":cam1:ColorMode",
    }

    def __init__(self, config: dict, context=None):
        pulse_pv = config.get("pulse_id_pv") or PULSE_ID_PVS[0]
        self.PVS = {**self.PVS, "pulse_id": f":image1:{pulse_pv}"}
        super().__init__(config, context)

    def not_ready(self) -> str | None:
        if not self.value("acquire"):
            return f"Camera with prefix {self.prefix} is not acquiring (cam1:Acquire is 0)"
        mode = self.value("color_mode", as_string=True)
        if mode != "Mono":
            return f"colour mode {mode} is not supported (only Mono)"
        return None

    def dtype(self, value: np.ndarray) -> np.dtype:
        return np.dtype(DATA_TYPES.get(self.value("data_type", as_string=True), value.dtype))

    def pulse_id(self) -> int | None:
        pulse_id = self.value("pulse_id")
        return None if pulse_id is None else int(pulse_id)
