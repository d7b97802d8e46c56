"""`cam_server.pipeline.data_processing.psss`: the photon single-shot spectrometer (PSSS).

The camera images a spectrum: energy along x, summed over a band of rows. From EPICS, with
the camera name as PV prefix: the band `<camera>:SPC_ROI_YMIN` .. `:SPC_ROI_YMAX` (all rows
unless 0 <= ymin < ymax <= height) and the energy axis `<camera>:SPECTRUM_X` (one value per
column; a frame is dropped while it is missing or of another length). Parameter `pixel_bkg`:
a background per pixel, subtracted before summing (default 0).

The spectrum is smoothed (Savitzky-Golay, window 51, order 3) and fitted with a Gaussian
(functions.gauss_fit_psss on every second point; a spectrum whose smoothed peak rises less
than 1.5 counts per row is noise: the starting values are reported). Channels, named after
the camera as the PVs: `<camera>:SPECTRUM_Y` (float64 spectrum), `:SPECTRUM_X`,
`:SPECTRUM_CENTER`, `:SPECTRUM_FWHM` (2.355 sigma), `:SPECTRUM_COM` and `:SPECTRUM_STD` (centre
of mass and standard deviation of the smoothed spectrum above its minimum) and
`:processing_parameters` (with the band used as `roi`). The spectrum, centre, FWHM, COM and
STD are also written to the PVs of those names, by a thread of their own: a slow or absent
IOC never holds frames back, and only the latest values are written.
"""

from __future__ import annotations

import logging
import math
import threading
import time

import numpy as np

from . import functions
from .parameters import parameters_json

log = logging.getLogger(__name__)

INPUTS = ("SPC_ROI_YMIN", "SPC_ROI_YMAX", "SPECTRUM_X")
OUTPUTS = ("SPECTRUM_Y", "SPECTRUM_CENTER", "SPECTRUM_FWHM", "SPECTRUM_COM", "SPECTRUM_STD")
CONNECT_TIMEOUT = 5.0  # seconds the first frame waits for the input PVs
WARNING_PERIOD = 10.0  # seconds between warnings about a missing energy axis
FWHM_PER_SIGMA = 2.355
WINDOW, ORDER = 51, 3  # of the smoothing
NOISE_PER_ROW = 1.5  # counts: a smaller peak is not fitted

_channels: dict[str, _Channels] = {}


class _Channels:
    """The PVs of one camera: inputs monitored, outputs written by a thread of their own."""

    def __init__(self, camera: str):
        import epics  # only pipelines running psss create a CA context

        self.inputs = {key: epics.PV(f"{camera}:{key}", auto_monitor=True) for key in INPUTS}
        self.outputs = {key: epics.PV(f"{camera}:{key}") for key in OUTPUTS}
        for pv in self.inputs.values():
            pv.wait_for_connection(timeout=CONNECT_TIMEOUT)
        self.roi = [0, 0]
        self._latest: dict | None = None
        self._ready = threading.Condition()
        self._warned = -math.inf
        epics.ca.CAThread(target=self._write, name=f"psss {camera}", daemon=True).start()

    def read(self):
        """(roi [ymin, ymax], energy axis or None) as the IOC has them now."""
        for i, key in enumerate(INPUTS[:2]):
            if self.inputs[key].connected:
                self.roi[i] = self.inputs[key].value
        axis = self.inputs["SPECTRUM_X"]
        return self.roi, (np.asarray(axis.value, np.float64) if axis.connected else None)

    def warn(self, message: str, *args) -> None:
        if time.monotonic() - self._warned > WARNING_PERIOD:
            self._warned = time.monotonic()
            log.warning(message, *args)

    def publish(self, values: dict) -> None:
        with self._ready:
            self._latest = values
            self._ready.notify()

    def _write(self) -> None:
        while True:
            with self._ready:
                self._ready.wait_for(lambda: self._latest is not None)
                values, self._latest = self._latest, None
            for key, value in values.items():
                pv = self.outputs[key]
                if pv.connected:
                    pv.put(value, wait=False)


def band(image, roi):
    """The rows ymin .. ymax of the image (all of them if that is not a band of it)."""
    ymin, ymax = roi
    return image[int(ymin) : int(ymax)] if image.shape[0] >= ymax > ymin >= 0 else image


def spectrum(rows, pixel_bkg=0.0) -> np.ndarray:
    """The sum of the rows minus the per-pixel background, float64."""
    return rows.sum(0, dtype=np.float64) - rows.shape[0] * float(pixel_bkg or 0.0)


def process_image(image, pulse_id, timestamp, x_axis, y_axis, parameters, bsdata=None):
    camera = parameters["camera_name"]
    channels = _channels.get(camera)
    if channels is None:
        channels = _channels[camera] = _Channels(camera)
    roi, axis = channels.read()
    if axis is None or len(axis) != image.shape[1]:
        channels.warn(
            "psss: no energy axis for %d columns from %s:SPECTRUM_X (got %s); frames dropped",
            image.shape[1],
            camera,
            "none" if axis is None else f"{len(axis)} values",
        )
        return None
    rows = band(image, roi)
    values = spectrum(rows, parameters.get("pixel_bkg"))
    from scipy.signal import savgol_filter

    smoothed = savgol_filter(values, WINDOW, ORDER)
    minimum = smoothed.min()
    rise = smoothed.max() - minimum
    noise = rise <= rows.shape[0] * NOISE_PER_ROW
    _, _, center, sigma = functions.gauss_fit_psss(
        smoothed[::2], axis[::2], offset=minimum, amplitude=rise, skip=noise
    )
    weights = smoothed - minimum
    total = weights.sum()
    com = float(np.dot(axis, weights) / total) if total > 0 else math.nan
    std = math.sqrt(np.dot((axis - com) ** 2, weights) / total) if total > 0 else math.nan
    measured = {
        "SPECTRUM_Y": values,
        "SPECTRUM_CENTER": float(center),
        "SPECTRUM_FWHM": FWHM_PER_SIGMA * float(sigma),
        "SPECTRUM_COM": com,
        "SPECTRUM_STD": std,
    }
    channels.publish(measured)
    result = {f"{camera}:{key}": value for key, value in measured.items()}
    result[f"{camera}:SPECTRUM_X"] = axis
    result[f"{camera}:processing_parameters"] = parameters_json(
        parameters, roi=[int(roi[0]), int(roi[1])]
    )
    return result
