"""Safe decoding of uploaded arrays: `.npy` bytes, or pickled numpy arrays without unpickling.

A pickle is a program: numpy's own reconstruction hands attacker-controlled state to C code
(`ndarray.__setstate__` with a forged object dtype crashes the interpreter). So the restricted
unpickler below never gives numpy a pickled object: the few globals a numpy array pickle names
are replaced by inert stand-ins that only record their arguments, and the array is then built
here from plain bytes, a simple numeric dtype and a checked shape. Anything else is refused.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import pickle

import numpy as np

from shmcam.supervisor.errors import BadRequest

MAX_ARRAY_BYTES = 1 << 30  # an upload declaring more is refused before any allocation
MAX_DIMS = 32  # images need 2; numpy 1.x allows no more than 32
NUMERIC_KINDS = "biufc"  # bool, signed, unsigned, float, complex
_NPY_MAGIC = b"\x93NUMPY"


def _refuse(reason: str) -> BadRequest:
    return BadRequest(f"refused: the upload is not a numpy array ({reason})")


def check_dtype(dtype: np.dtype) -> np.dtype:
    """Only plain numeric dtypes: images and backgrounds need nothing else, and object or
    structured dtypes are where unsafe reconstruction hides."""
    if dtype.kind not in NUMERIC_KINDS:
        raise BadRequest(
            f"refused: dtype {dtype.str!r} is not a plain numeric type "
            f"(use bool, int, uint, float or complex)"
        )
    return dtype


def _check_size(shape: tuple, dtype: np.dtype) -> int:
    """The byte size a shape declares, refused above MAX_ARRAY_BYTES (before allocating)."""
    if (
        not isinstance(shape, tuple)
        or len(shape) > MAX_DIMS
        or not all(type(n) is int and n >= 0 for n in shape)
    ):
        raise BadRequest(
            f"refused: invalid array shape {shape!r} (use up to {MAX_DIMS} non-negative integers)"
        )
    size = math.prod(shape) * dtype.itemsize
    if size > MAX_ARRAY_BYTES:
        raise BadRequest(
            f"refused: the array would take {size} bytes, more than the limit of {MAX_ARRAY_BYTES}"
        )
    return size


def check_array(array) -> np.ndarray:
    """An ndarray of a plain numeric dtype within the size limit, else BadRequest."""
    if not isinstance(array, np.ndarray):
        raise BadRequest(f"refused: expected a numpy array, got {type(array).__name__}")
    check_dtype(array.dtype)
    _check_size(array.shape, array.dtype)
    return array


def _from_bytes(raw, dtype: np.dtype, shape: tuple, order: str = "C") -> np.ndarray:
    """A writable array from raw bytes after checking dtype, shape and exact length."""
    check_dtype(dtype)
    size = _check_size(shape, dtype)
    sent = memoryview(raw).nbytes
    if sent != size:
        raise BadRequest(
            f"refused: {sent} data bytes do not match "
            f"shape {list(shape)} of dtype {dtype.str!r} ({size} bytes)"
        )
    flat = np.frombuffer(raw, dtype=dtype)
    return flat.reshape(shape, order=order).copy()


# --- .npy ------------------------------------------------------------------------------------


def _check_npy_header(data: bytes) -> None:
    """Check the declared dtype and size before np.load allocates the declared array."""
    fp = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(fp)
        readers = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }
        if version not in readers:
            raise ValueError(f"npy format version {version} is not supported (use 1.0 or 2.0)")
        shape, _, dtype = readers[version](fp)
    except ValueError as error:
        raise _refuse(f"bad .npy header: {error}") from None
    check_dtype(dtype)
    if _check_size(shape, dtype) > len(data) - fp.tell():
        raise _refuse(
            f".npy data is truncated: shape {list(shape)} of {dtype.str!r} "
            f"needs more than the {len(data) - fp.tell()} bytes sent"
        )


def _load_npy(data: bytes) -> np.ndarray:
    _check_npy_header(data)
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as error:
        raise _refuse(f"bad .npy data: {error}") from None


# --- pickle: inert stand-ins for the globals numpy array pickles name -------------------------


class _NdarrayType:
    """Stands for `numpy.ndarray`; it is only ever an argument, never called."""


class _DtypeSpec:
    """Records `numpy.dtype(obj, align, copy)` and its BUILD state instead of running them."""

    def __init__(self, obj, align=False, copy=False):
        self.obj = obj
        self.state = None

    def __setstate__(self, state):
        self.state = state

    def build(self) -> np.dtype:
        """A simple dtype from a type string and a byte order; nested or flagged ones refused."""
        if not isinstance(self.obj, str):
            raise _refuse(f"dtype given as {type(self.obj).__name__}, not a type string")
        byteorder = "|"
        if self.state is not None:
            if (
                not isinstance(self.state, tuple)
                or len(self.state) < 5
                or any(part is not None for part in self.state[2:5])
            ):
                raise _refuse("structured or nested dtype")
            byteorder = self.state[1]
        if byteorder not in ("<", ">", "|", "="):
            raise _refuse(f"invalid byte order {byteorder!r}")
        try:
            dtype = np.dtype(self.obj)
        except Exception as error:  # TypeError, ValueError or even SyntaxError
            raise _refuse(f"invalid dtype {self.obj!r}: {error}") from None
        return dtype.newbyteorder(byteorder) if byteorder in "<>" else dtype


class _ArraySpec:
    """Records an array's shape, dtype and raw bytes, from `_reconstruct` + BUILD (protocols
    0-4) or from `_frombuffer` (protocol 5)."""

    def __init__(self, shape=None, dtype=None, fortran=False, raw=None):
        self.shape, self.dtype, self.fortran, self.raw = shape, dtype, fortran, raw

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) != 5:
            raise _refuse("unexpected ndarray state")
        _, self.shape, self.dtype, self.fortran, self.raw = state

    def build(self) -> np.ndarray:
        if not isinstance(self.dtype, _DtypeSpec):
            raise _refuse("array without a numpy dtype")
        dtype = check_dtype(self.dtype.build())
        if not isinstance(self.raw, (bytes, bytearray, pickle.PickleBuffer)):
            raise _refuse("array data is not raw bytes")
        return _from_bytes(self.raw, dtype, self.shape, "F" if self.fortran is True else "C")


def _reconstruct(subtype, shape, typecode) -> _ArraySpec:
    """numpy's `_reconstruct(ndarray, (0,), b'b')`: a placeholder BUILD then fills in."""
    if subtype is not _NdarrayType:
        raise _refuse("only plain numpy.ndarray is accepted")
    return _ArraySpec()


def _frombuffer(buf, dtype, shape, order) -> _ArraySpec:
    """numpy's protocol-5 `_frombuffer(buffer, dtype, shape, order)`."""
    return _ArraySpec(shape, dtype, order == "F", buf)


def _latin1_encode(text, encoding) -> bytes:
    """`_codecs.encode(text, 'latin1')`, how numpy stores raw bytes in protocol 0-2 pickles;
    other codecs are refused so a pickle cannot reach codec lookup."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _refuse(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _empty_bytes() -> bytes:
    """`bytes()`, how protocol 0-2 pickles store the data of an empty array."""
    return b""


_ALLOWED = {
    ("numpy", "ndarray"): _NdarrayType,
    ("numpy", "dtype"): _DtypeSpec,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # numpy 1.x pickles
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy 2.x pickles
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _latin1_encode,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}


class _ArrayUnpickler(pickle.Unpickler):
    """Resolves only the globals of a numpy array pickle, and to inert stand-ins."""

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _refuse(f"it names {module}.{name}") from None


def _load_pickle(data: bytes) -> np.ndarray:
    try:
        result = _ArrayUnpickler(io.BytesIO(data)).load()
        if not isinstance(result, _ArraySpec):
            raise _refuse(f"it decodes to {type(result).__name__}")
        return result.build()
    except BadRequest:
        raise
    except Exception as error:  # any malformed pickle: the message says what broke
        raise _refuse(f"{type(error).__name__}: {error}") from None


def load_array(data: bytes) -> np.ndarray:
    """An uploaded array from `.npy` bytes, from the JSON that GET image_bytes answers (so a
    background copies between nodes as it is), or from a numpy array pickle, never unpickling
    code."""
    if bytes(data[: len(_NPY_MAGIC)]) == _NPY_MAGIC:
        return _load_npy(data)
    if bytes(data[:1]) == b"{":
        try:
            payload = json.loads(data)
        except ValueError as error:
            raise BadRequest(f"refused: the upload looks like JSON but is not: {error}") from None
        return array_from_image_bytes(payload)
    return _load_pickle(data)


# --- CamServer's image_bytes JSON --------------------------------------------------------------


def image_bytes_payload(array: np.ndarray) -> dict:
    """CamServer's `{"bytes": base64 of C-order bytes, "shape": [h, w], "dtype": "<u2"}`."""
    return {
        "bytes": base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii"),
        "shape": list(array.shape),
        "dtype": array.dtype.str,
    }


def array_from_image_bytes(payload: dict) -> np.ndarray:
    """The array of an image_bytes payload, every field checked."""
    if not isinstance(payload, dict) or not {"bytes", "shape", "dtype"} <= payload.keys():
        raise BadRequest(
            'image_bytes needs a JSON object with "bytes" (base64), '
            '"shape" ([height, width]) and "dtype" (e.g. "<u2")'
        )
    try:
        raw = base64.b64decode(payload["bytes"], validate=True)
    except (binascii.Error, TypeError, ValueError) as error:
        raise BadRequest(f'image_bytes: "bytes" is not valid base64: {error}') from None
    if not isinstance(payload["dtype"], str):
        raise BadRequest(
            f'image_bytes: "dtype" must be a string like "<u2", got {payload["dtype"]!r}'
        )
    try:
        dtype = np.dtype(payload["dtype"])
    except Exception as error:  # numpy raises TypeError, ValueError or even SyntaxError
        raise BadRequest(f'image_bytes: invalid "dtype" {payload["dtype"]!r}: {error}') from None
    shape = payload["shape"]
    if not isinstance(shape, list):
        raise BadRequest(f'image_bytes: "shape" must be a list like [height, width], got {shape!r}')
    return _from_bytes(raw, dtype, tuple(shape))


def check_background(array: np.ndarray) -> np.ndarray:
    """An uploaded background: a non-empty 2-D image of real numbers, as frames are."""
    if array.dtype.kind not in "biuf":
        raise BadRequest(f"a background must hold real numbers, got dtype {array.dtype.str!r}")
    if array.ndim != 2 or not array.size:
        raise BadRequest(
            f"a background must be a non-empty 2-D image [height, width], "
            f"got shape {list(array.shape)}"
        )
    return array
