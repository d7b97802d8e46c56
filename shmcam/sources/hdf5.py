"""Replay of recorded frames: an HDF5 dataset of shape (N, height, width), looped at a rate.

Used to replay a measurement through the pipelines, and in tests. Each frame is read from the
file when it is due (a fresh array each time); pulse ids are counted, timestamps are the time
of replay.
"""

from __future__ import annotations

import h5py

from .base import Pacer, PulseCounter, Source, arrival_time


def split_source(source: str) -> tuple[str, str]:
    """ "<file>:<dataset path>" into its two parts (the file name may contain colons)."""
    file_name, _, dataset = str(source).rpartition(":")
    if not file_name or not dataset:
        raise ValueError(f'source {source!r}: expected "<file>:<dataset path>"')
    return file_name, dataset


class Hdf5Source(Source):
    """Config: `source` = "<file>:<dataset path>", `frame_rate` (default 10)."""

    def __init__(self, config: dict, context=None):
        file_name, path = split_source(config["source"])
        self._file = h5py.File(file_name, "r")
        try:
            self._dataset = self._file[path]
            if self._dataset.ndim != 3 or not self._dataset.shape[0]:
                raise ValueError(
                    f"dataset {path} in {file_name} has shape "
                    f"{self._dataset.shape}, not (frames, height, width)"
                )
        except Exception:
            self._file.close()
            raise
        self.reason = f"replaying {len(self._dataset)} frames of {file_name}:{path}"
        self._pacer = Pacer(float(config.get("frame_rate") or 10.0))
        self._pulse_ids = PulseCounter()
        self._n = 0

    @classmethod
    def probe(cls, config: dict, context, timeout: float) -> tuple[bool, str]:
        """Whether the file and its dataset can be replayed."""
        try:
            cls(config, context).close()
        except Exception as error:
            return False, f"{type(error).__name__}: {error}"
        return True, f"{config['source']} can be replayed"

    def read(self, timeout: float):
        if not self._pacer.wait(timeout):
            return None
        image = self._dataset[self._n % len(self._dataset)]
        self._n += 1
        return image, self._pulse_ids.next(), arrival_time()

    def close(self) -> None:
        self._file.close()
