"""bsread type names and their numpy dtypes (spec section 5).

The table is closed: bsread has no float16, complex or char types.  ``string`` travels as
UTF-8 bytes, i.e. a ``uint8`` array on the wire.
"""

from __future__ import annotations

import sys

import numpy as np

__all__ = ["TYPE_CODES", "bsread_type", "encoding_of", "numpy_dtype"]

#: bsread type name -> numpy type code (without byte order).
TYPE_CODES = {
    "int8": "i1",
    "uint8": "u1",
    "int16": "i2",
    "uint16": "u2",
    "int32": "i4",
    "uint32": "u4",
    "int64": "i8",
    "uint64": "u8",
    "float32": "f4",
    "float64": "f8",
    "bool": "?",
    "string": "u1",
}

# (dtype.kind, itemsize) -> bsread name; the byte order is carried by "encoding" instead.
_NAMES = {
    (np.dtype(code).kind, np.dtype(code).itemsize): name
    for name, code in TYPE_CODES.items()
    if name != "string"
}


def numpy_dtype(type_name: str, big_endian: bool = False) -> np.dtype:
    """The numpy dtype of a bsread type name (case-insensitive), in the given byte order."""
    code = TYPE_CODES.get(type_name.lower())
    if code is None:
        raise KeyError(f"unknown bsread type {type_name!r}")
    return np.dtype((">" if big_endian else "<") + code)


def bsread_type(dtype: np.dtype) -> str:
    """The bsread type name of a numpy dtype; TypeError for dtypes bsread cannot carry."""
    name = _NAMES.get((dtype.kind, dtype.itemsize))
    if name is None:
        raise TypeError(f"numpy dtype {dtype} has no bsread type")
    return name


def encoding_of(dtype: np.dtype) -> str:
    """The data header ``encoding`` of an array: its byte order, else the host's."""
    if dtype.byteorder == ">":
        return "big"
    if dtype.byteorder == "<":
        return "little"
    return sys.byteorder
