"""Throw mutated bsread messages at the Decoder and count what happens.

Run by test_bsread_fuzz.py in a subprocess: a decoder gap that lets garbage reach
bitshuffle's C code would kill this process, and the test would see the exit status.

Usage: bsread_fuzz_child.py GOLDEN_DIR SEED COUNT
Prints one JSON object: messages, decoded, rejected, channel_errors, unexpected (exceptions
other than BsreadError), per-mutation outcomes and the first few unexpected tracebacks.

Half of the messages have each part placed right before an inaccessible page, so that reading
even one byte past a part faults at once (instead of reading a neighbour on the heap).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before bitshuffle is imported

import base64  # noqa: E402
import ctypes  # noqa: E402
import json  # noqa: E402
import mmap  # noqa: E402
import random  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from shmcam.bsread import BsreadError, Decoder, Encoder  # noqa: E402

ODD_VALUES = [
    None,
    "",
    "x",
    -1,
    0,
    1.5,
    2**40,
    2**70,
    -(2**63),
    [],
    {},
    [1.5],
    ["a"],
    True,
    "STRING",
]


def seed_messages(golden_dir: Path) -> list[list[bytes]]:
    """Every golden message, plus larger synthetic ones with many bitshuffle blocks."""
    messages = [
        [base64.b64decode(part) for part in message["parts_b64"]]
        for path in sorted(golden_dir.glob("*.json"))
        for message in json.loads(path.read_text())["messages"]
    ]
    rng = np.random.default_rng(0)
    image = (200 + rng.normal(0, 20, (120, 160))).astype(np.uint16)
    data = {
        "image": image,
        "profile": image.sum(axis=0),
        "text": "µm",
        "x": 1.5,
        "flags": image[0] > 200,
    }
    for compression, header_compression in (
        ("bitshuffle_lz4", None),
        ("lz4", "bitshuffle_lz4"),
        (None, "lz4"),
    ):
        parts = Encoder(compression, header_compression).encode(data, 5, (1, 2))
        messages.append([bytes(part) for part in parts])
    return messages


def flip_bits(rng, parts):
    index = rng.randrange(len(parts))
    if parts[index]:
        part = bytearray(parts[index])
        for _ in range(rng.randint(1, 8)):
            part[rng.randrange(len(part))] ^= 1 << rng.randrange(8)
        parts[index] = bytes(part)


def truncate(rng, parts):
    index = rng.randrange(len(parts))
    parts[index] = parts[index][: rng.randint(0, len(parts[index]))]


def resize(rng, parts):
    index = rng.randrange(len(parts))
    part, at = parts[index], rng.randint(0, len(parts[index]))
    if rng.random() < 0.5:
        parts[index] = part[:at] + rng.randbytes(rng.randint(1, 64)) + part[at:]
    else:
        parts[index] = part[:at] + part[at + rng.randint(1, 64) :]


def reorder(rng, parts):
    choice = rng.randrange(4)
    if choice == 0 and len(parts) > 2:
        first, second = rng.sample(range(len(parts)), 2)
        parts[first], parts[second] = parts[second], parts[first]
    elif choice == 1:
        del parts[rng.randrange(len(parts))]
    elif choice == 2:
        parts.insert(rng.randrange(len(parts) + 1), rng.choice(parts))
    else:
        parts.append(rng.choice([b"", rng.randbytes(rng.randint(1, 100))]))


def random_part(rng, parts):
    parts[rng.randrange(len(parts))] = rng.randbytes(rng.choice([0, 1, 11, 12, 16, 20, 200, 5000]))


def json_object(part):
    """The JSON object in a part, or None if an earlier mutation broke it."""
    try:
        value = json.loads(part)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def edit_main_header(rng, parts):
    header = json_object(parts[0])
    if header is None:
        return flip_bits(rng, parts)
    key = rng.choice(["pulse_id", "hash", "global_timestamp", "dh_compression", "htype"])
    if rng.random() < 0.2:
        header.pop(key, None)
    elif key == "global_timestamp":
        header[key] = rng.choice(
            [
                {"sec": rng.choice(ODD_VALUES), "ns": 1},
                {"epoch": 1, "ns": 2},
                rng.choice(ODD_VALUES),
            ]
        )
    elif key == "dh_compression":
        header[key] = rng.choice(["lz4", "bitshuffle_lz4", "none", "zip", None, 5])
    else:
        header[key] = rng.choice(ODD_VALUES + [f"{rng.getrandbits(128):032x}"])
    parts[0] = json.dumps(header).encode()


def edit_data_header(rng, parts):
    """Edit the JSON of an uncompressed data header, with a new hash so that it is parsed."""
    main = json_object(parts[0])
    header = json_object(parts[1]) if main is not None and len(parts) > 1 else None
    channels = header.get("channels") if header is not None else None
    if not (isinstance(channels, list) and channels and all(isinstance(c, dict) for c in channels)):
        return flip_bits(rng, parts)  # also for compressed data headers
    channel = rng.choice(channels)
    key = rng.choice(["type", "shape", "compression", "encoding", "name", "drop", "add"])
    if key == "drop":
        channels.remove(channel)
    elif key == "add":
        channels.insert(rng.randrange(len(channels) + 1), dict(channel, name=f"new{rng.random()}"))
    elif key == "type":
        channel[key] = rng.choice(
            [
                "int8",
                "uint16",
                "float32",
                "float64",
                "bool",
                "string",
                "float16",
                "Float64",
                5,
                None,
            ]
        )
    elif key == "shape":
        channel[key] = rng.choice(
            [
                [],
                [0],
                [1],
                [-1],
                [2**40],
                [2**31, 2**31],
                "x",
                [1.5],
                None,
                [rng.randint(0, 70), rng.randint(0, 70)],
                [rng.randint(0, 6000)],
            ]
        )
    elif key == "compression":
        channel[key] = rng.choice(["none", "lz4", "bitshuffle_lz4", "zip", None, 1])
    else:
        channel[key] = rng.choice(ODD_VALUES + ["big", "little", channels[0].get("name")])
    parts[1] = json.dumps(header).encode()
    main["hash"] = f"{rng.getrandbits(128):032x}"
    parts[0] = json.dumps(main).encode()


def compressed_parts(parts):
    """Indexes of data parts that carry a bitshuffle (8192-byte blocks) or an lz4 header."""
    return [
        index
        for index in range(2, len(parts), 2)
        if (len(parts[index]) >= 12 and parts[index][8:12] == b"\0\0\x20\0")
        or 5 <= len(parts[index]) < 12
    ]


def scramble_blocks(rng, parts):
    """Random bytes inside the LZ4 blocks of a bitshuffle part, its framing left valid:
    exactly what bitshuffle's unchecked LZ4 decoder must never see unguarded."""
    candidates = compressed_parts(parts) or [rng.randrange(len(parts))]
    index = rng.choice(candidates)
    part = bytearray(parts[index])
    position = 12
    while position + 4 <= len(part):
        (length,) = struct.unpack_from(">I", part, position)
        start, end = position + 4, min(position + 4 + length, len(part))
        for _ in range(rng.randint(1, 16)):
            if end > start:
                part[rng.randrange(start, end)] = rng.randrange(256)
        if rng.random() < 0.3 and end > start:
            part[start:end] = rng.randbytes(end - start)
        position += 4 + length
    parts[index] = bytes(part)


def edit_sizes(rng, parts):
    """Change the size or block-size fields of a compressed part."""
    candidates = compressed_parts(parts) or [rng.randrange(len(parts))]
    index = rng.choice(candidates)
    part = bytearray(parts[index].ljust(12, b"\0"))
    field = rng.choice([(">q", 0), (">i", 8), ("<I", 0)])
    value = rng.choice(
        [0, 1, -1, 7, 8, 16, 24, 4096, 8192, 16384, 2**20, 2**31 - 1, rng.randrange(2**31)]
    )
    try:
        struct.pack_into(field[0], part, field[1], value)
    except struct.error:
        struct.pack_into(field[0], part, field[1], abs(value) % 2**31)
    parts[index] = bytes(part)


MUTATIONS = [
    flip_bits,
    truncate,
    resize,
    reorder,
    random_part,
    edit_main_header,
    edit_data_header,
    scramble_blocks,
    edit_sizes,
]


_LIBC = ctypes.CDLL(None, use_errno=True)


def guarded(part: bytes) -> memoryview:
    """The part's bytes, ending exactly where an inaccessible page begins."""
    size = -(-len(part) // mmap.PAGESIZE) * mmap.PAGESIZE
    region = mmap.mmap(-1, size + mmap.PAGESIZE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(region))
    if _LIBC.mprotect(ctypes.c_void_p(address + size), mmap.PAGESIZE, 0):  # PROT_NONE
        raise OSError(ctypes.get_errno(), "mprotect failed")
    region[size - len(part) : size] = part
    return memoryview(region)[size - len(part) : size]


def touch(value):
    """Read every byte of a decoded value, so that a bad view would fault here."""
    if isinstance(value, np.ndarray):
        value.tobytes()


def main(golden_dir: str, seed: str, count: str) -> None:
    rng = random.Random(int(seed))
    seeds = seed_messages(Path(golden_dir))
    for parts in seeds:  # the seeds themselves must be clean
        assert not Decoder().decode(parts).errors
    counts = Counter(messages=0, decoded=0, rejected=0, channel_errors=0, unexpected=0)
    outcomes = defaultdict(Counter)
    tracebacks = []
    decoder = Decoder()
    for _ in range(int(count)):
        parts = list(rng.choice(seeds))
        applied = [rng.choice(MUTATIONS) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
        for mutation in applied:
            if parts:
                mutation(rng, parts)
        if rng.random() < 0.5:
            parts = [guarded(part) for part in parts]
        if rng.random() < 0.3:
            decoder = Decoder()  # sometimes a cold cache, mostly a warm one
        counts["messages"] += 1
        try:
            message = decoder.decode(parts)
            for value in message.data.values():
                touch(value)
            outcome = "channel_error" if message.errors else "decoded"
            counts["decoded"] += 1
            counts["channel_errors"] += len(message.errors)
        except BsreadError:
            outcome = "rejected"
            counts["rejected"] += 1
        except Exception:  # the finding this test exists for
            outcome = "unexpected"
            counts["unexpected"] += 1
            if len(tracebacks) < 5:
                tracebacks.append(f"{[m.__name__ for m in applied]}: {traceback.format_exc()}")
        for mutation in applied:
            outcomes[mutation.__name__][outcome] += 1
    print(json.dumps({**counts, "outcomes": outcomes, "tracebacks": tracebacks}))


if __name__ == "__main__":
    main(*sys.argv[1:])
