"""bsread payload compression: ``none``, ``lz4`` and ``bitshuffle_lz4`` (spec section 6).

Decompression treats its input as hostile. bitshuffle's C code trusts the 4-byte length in
front of each LZ4 block: it is never told where its input ends, so a bad length makes it read
past the part and crash the process (the "segfault on garbage" of bitshuffle). Each block
itself is decoded with ``LZ4_decompress_safe``, bounded by that length and by the block's
output size (checked in bitshuffle 0.5.2's binary; older releases used the unbounded
``LZ4_decompress_fast``). So before bitshuffle sees a part, this module checks the 12-byte
header (size against the shape, block size sane) and walks every block length. The blocks
and the raw tail must tile the part exactly, each length within what LZ4 can produce for its
block. What remains for bitshuffle is corrupt LZ4 inside valid framing: it rejects that with a
RuntimeError, which becomes a BsreadError here. A part kept compressed (``check_compressed``,
e.g. to become an HDF5 chunk as it is) passes the same checks, so its later reader can trust it.
"""

from __future__ import annotations

import struct

import bitshuffle
import lz4.block
import numpy as np

from .errors import BsreadError

__all__ = [
    "BITSHUFFLE_LZ4",
    "CODECS",
    "LZ4",
    "NONE",
    "block_elems",
    "check_compressed",
    "codec_name",
    "compress",
    "decompress",
]

NONE = "none"
LZ4 = "lz4"
BITSHUFFLE_LZ4 = "bitshuffle_lz4"
CODECS = (NONE, LZ4, BITSHUFFLE_LZ4)

#: Largest bitshuffle block accepted on receive. bsread always uses 8192 bytes.
MAX_BLOCK_BYTES = 1 << 20
#: LZ4 cannot compress better than ~255:1. A larger claimed size is a lie, and believing it
#: would make us allocate up to that size.
MAX_RATIO = 256
#: Limit on the decoded size of a part whose size the header does not fix (no shape, or a
#: string, or the data header).
UNSIZED_LIMIT = 64 << 20

_BITSHUFFLE_HEADER = struct.Struct(">qi")
_BLOCK_LENGTH = struct.Struct(">I")
_LZ4_SIZE = {False: struct.Struct("<I"), True: struct.Struct(">I")}


def codec_name(setting: object) -> str:
    """Normalise a compression setting: None/False/"none" -> "none", True -> "bitshuffle_lz4".

    ``True`` is what CamServer configs use for "compress" (``image_compression: true``).
    """
    if setting is None or setting is False:
        return NONE
    if setting is True:
        return BITSHUFFLE_LZ4
    if isinstance(setting, str) and setting.lower() in CODECS:
        return setting.lower()
    raise ValueError(f"unknown bsread compression {setting!r}: use None, 'lz4' or 'bitshuffle_lz4'")


def block_elems(itemsize: int) -> int:
    """bsread's bitshuffle block size in elements: 8192 bytes' worth, a multiple of 8."""
    return max(128, ((8192 // itemsize) // 8) * 8)


def compress(array: np.ndarray, codec: str, big_endian: bool = False) -> bytes | memoryview:
    """One data part for a C-contiguous array.

    With ``none`` the part is a zero-copy view of the array's memory. ``big_endian`` picks the
    byte order of the ``lz4`` size field (see ``decompress``).
    """
    flat = array.reshape(-1)
    if codec == NONE:
        return memoryview(flat.view(np.uint8))
    if codec == BITSHUFFLE_LZ4:
        itemsize = flat.itemsize
        elems = block_elems(itemsize)
        header = _BITSHUFFLE_HEADER.pack(flat.nbytes, elems * itemsize)
        if not flat.size:
            return header
        return b"".join((header, bitshuffle.compress_lz4(flat.view(f"u{itemsize}"), elems)))
    if codec == LZ4:
        size = _LZ4_SIZE[big_endian].pack(flat.nbytes)
        return size + lz4.block.compress(flat.view(np.uint8), store_size=False)
    raise ValueError(f"unknown bsread compression {codec!r}")


def decompress(
    part: memoryview, codec: str, itemsize: int, nbytes: int | None = None, big_endian: bool = False
) -> memoryview | bytes | np.ndarray:
    """The raw bytes of a received data part, validated.

    ``nbytes`` is the size the data header implies (shape x itemsize), or None when it does not
    fix one. The ``lz4`` size field is read in the channel's byte order, as the reference
    receiver does (and as our encoder writes it). Raises BsreadError saying what is wrong.
    """
    if codec == NONE:
        _check_size(len(part), itemsize, nbytes)
        return part
    if codec == BITSHUFFLE_LZ4:
        return _bitshuffle_decompress(part, itemsize, nbytes)
    if codec == LZ4:
        return _lz4_decompress(part, itemsize, nbytes, big_endian)
    raise BsreadError(f"unknown compression {codec!r}")


def _check_size(size: int, itemsize: int, nbytes: int | None) -> None:
    if nbytes is not None and size != nbytes:
        raise BsreadError(f"{size} bytes of data where the header's shape needs {nbytes}")
    if nbytes is None and size > UNSIZED_LIMIT:
        raise BsreadError(
            f"{size} bytes of data exceed the limit of {UNSIZED_LIMIT} for a channel without shape"
        )
    if size % itemsize:
        raise BsreadError(f"{size} bytes of data are not a whole number of {itemsize}-byte items")


def _check_claim(size: int, itemsize: int, nbytes: int | None, part_size: int) -> None:
    """Validate a decompressed size read from the wire before allocating it."""
    if size < 0:
        raise BsreadError(f"negative uncompressed size {size}")
    if size > MAX_RATIO * part_size + 64:
        raise BsreadError(f"uncompressed size {size} is impossible for a {part_size}-byte part")
    _check_size(size, itemsize, nbytes)


def _lz4_decompress(part: memoryview, itemsize: int, nbytes: int | None, big_endian: bool) -> bytes:
    size = _check_lz4(part, itemsize, nbytes, big_endian)
    if size == 0:
        return b""
    try:
        raw = lz4.block.decompress(part[4:], uncompressed_size=size)
    except lz4.block.LZ4BlockError as error:
        raise BsreadError(f"corrupt lz4 data: {error}") from None
    if len(raw) != size:
        raise BsreadError(f"lz4 data decompress to {len(raw)} bytes, the size field says {size}")
    return raw


def _check_lz4(part: memoryview, itemsize: int, nbytes: int | None, big_endian: bool) -> int:
    """The uncompressed size an lz4 part claims, checked; 0 is an empty value."""
    if len(part) < 4:
        raise BsreadError(f"lz4 part of {len(part)} bytes is shorter than its 4-byte size")
    (size,) = _LZ4_SIZE[big_endian].unpack_from(part)
    if size:
        _check_claim(size, itemsize, nbytes, len(part))
    return size


def _bitshuffle_decompress(
    part: memoryview, itemsize: int, nbytes: int | None
) -> memoryview | bytes | np.ndarray:
    size, block_bytes = _check_bitshuffle(part, itemsize, nbytes)
    if size == 0:
        return b""
    body = part[_BITSHUFFLE_HEADER.size :]
    n, block = size // itemsize, block_bytes // itemsize
    if n < 8:  # no block at all: the elements follow raw
        return body
    try:
        return bitshuffle.decompress_lz4(
            np.frombuffer(body, np.uint8), (n,), np.dtype(f"u{itemsize}"), block
        )
    except RuntimeError as error:
        raise BsreadError(f"corrupt bitshuffle_lz4 data: {error}") from None


def check_compressed(
    part: memoryview, codec: str, itemsize: int, nbytes: int | None = None, big_endian: bool = False
) -> int:
    """Validate a compressed part's framing without decompressing it; its uncompressed size.

    For a part that is kept compressed (e.g. written as an HDF5 chunk): whoever decompresses
    it later can trust its header and, for ``bitshuffle_lz4``, its block lengths.
    """
    if codec == BITSHUFFLE_LZ4:
        return _check_bitshuffle(part, itemsize, nbytes)[0]
    if codec == LZ4:
        return _check_lz4(part, itemsize, nbytes, big_endian)
    raise BsreadError(f"{codec!r} is not a compression")


def _check_bitshuffle(part: memoryview, itemsize: int, nbytes: int | None) -> tuple[int, int]:
    """(uncompressed size, block size in bytes) of a bitshuffle_lz4 part whose header, block
    lengths and raw tail are consistent; size 0 is an empty value."""
    if len(part) < _BITSHUFFLE_HEADER.size:
        raise BsreadError(
            f"bitshuffle_lz4 part of {len(part)} bytes is shorter than its 12-byte header"
        )
    size, block_bytes = _BITSHUFFLE_HEADER.unpack_from(part)
    if size == 0:
        return 0, block_bytes
    _check_claim(size, itemsize, nbytes, len(part))
    if not 0 < block_bytes <= MAX_BLOCK_BYTES or block_bytes % (8 * itemsize):
        raise BsreadError(
            f"bitshuffle block size {block_bytes} bytes is not a positive multiple of "
            f"8 {itemsize}-byte items up to {MAX_BLOCK_BYTES}"
        )
    body = part[_BITSHUFFLE_HEADER.size :]
    n, block = size // itemsize, block_bytes // itemsize
    if n < 8:
        _check_size(len(body), itemsize, size)
    else:
        _check_blocks(body, n, block, itemsize)
    return size, block_bytes


def _check_blocks(body: memoryview, n: int, block: int, itemsize: int) -> None:
    """Require the LZ4 blocks and the raw tail to tile ``body`` exactly (spec section 6)."""
    full, rest = divmod(n, block)
    sizes = [block * itemsize] * full
    if rest >= 8:
        sizes.append((rest - rest % 8) * itemsize)
    end = len(body) - (n % 8) * itemsize  # where the raw tail starts
    if end < 5 * len(sizes):
        raise BsreadError(
            f"bitshuffle_lz4 part of {len(body) + 12} bytes is too short for {len(sizes)} blocks"
        )
    pos = 0
    for index, block_size in enumerate(sizes):
        if pos + 4 > end:
            raise BsreadError(f"bitshuffle_lz4 data end in block {index} of {len(sizes)}")
        (length,) = _BLOCK_LENGTH.unpack_from(body, pos)
        if not 0 < length <= block_size + block_size // 255 + 16:  # LZ4_compressBound
            raise BsreadError(
                f"bitshuffle_lz4 block {index} claims {length} compressed bytes for {block_size}"
            )
        pos += 4 + length
    if pos != end:
        raise BsreadError(
            f"bitshuffle_lz4 blocks end at byte {pos + 12}, the raw tail at byte {end + 12}"
        )
