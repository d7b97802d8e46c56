"""Mirrors, quarter turns and the region of interest as index bookkeeping, not pixel copies.

The output image is the source's rectangle `rect` transposed (or not), then with its rows
and/or columns reversed: that covers all 8 results of mirror_x, mirror_y and "ortho"
rotations. The pixel pass reads the rectangle in memory order (fast, vectorised), and the
profiles and axes it yields are put into output order here, for free. Only the image itself
needs a copy when it is not the identity (numpy does it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Orientation:
    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    @property
    def identity(self) -> bool:
        return not (self.transpose or self.flip_rows or self.flip_cols)

    def mirrored(self, x: bool, y: bool) -> Orientation:
        """Then mirrored left-right (x) and/or up-down (y)."""
        return replace(self, flip_cols=self.flip_cols ^ x, flip_rows=self.flip_rows ^ y)

    def turned(self, quarter_turns: int) -> Orientation:
        """Then turned counter-clockwise by quarter_turns (np.rot90: flipud of the transpose)."""
        orientation = self
        for _ in range(quarter_turns % 4):
            orientation = Orientation(
                not orientation.transpose, not orientation.flip_cols, orientation.flip_rows
            )
        return orientation

    def view(self, array: np.ndarray) -> np.ndarray:
        """array (the source rectangle) as the output sees it; a numpy view."""
        if self.transpose:
            array = array.T
        if self.flip_rows:
            array = array[::-1]
        return array[:, ::-1] if self.flip_cols else array

    def along_x(self, per_column, per_row):
        """What runs along the output's x (its columns), from the source's per-column and
        per-row values (axes or profiles of the rectangle)."""
        values = per_row if self.transpose else per_column
        return values[::-1] if self.flip_cols else values

    def along_y(self, per_column, per_row):
        """What runs along the output's y (its rows), likewise."""
        values = per_column if self.transpose else per_row
        return values[::-1] if self.flip_rows else values

    def rect(self, roi, shape) -> tuple[int, int, int, int]:
        """(row_start, row_stop, col_start, col_stop) of the source (of that shape) under
        the output region of interest [offset_x, size_x, offset_y, size_y] (None: all),
        with the spec's clipping: size to the image, offset to [0, shape - size]."""
        rows, cols = shape
        if roi is None:
            return 0, rows, 0, cols
        height, width = (cols, rows) if self.transpose else (rows, cols)
        offset_x, size_x, offset_y, size_y = roi
        size_x, size_y = min(size_x, width), min(size_y, height)
        offset_x = min(max(offset_x, 0), width - size_x)
        offset_y = min(max(offset_y, 0), height - size_y)
        if self.flip_rows:
            offset_y = height - offset_y - size_y
        if self.flip_cols:
            offset_x = width - offset_x - size_x
        if self.transpose:
            return offset_x, offset_x + size_x, offset_y, offset_y + size_y
        return offset_y, offset_y + size_y, offset_x, offset_x + size_x
