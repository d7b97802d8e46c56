"""Benchmark shmcam.bsread streams: a 2560x2160 uint16 beam image plus ~30 pipeline channels.

Three runs over tcp://127.0.0.1, each of --seconds, PUSH -> PULL with back-pressure (so the
slower side sets the pace):

* raw:            pyzmq send_multipart/recv_multipart of the same bytes (the baseline);
* none:           shmcam.bsread Sender/Receiver, no compression;
* bitshuffle_lz4: the same with bitshuffle_lz4 on every channel.

Sender and receiver are separate processes. Each measures its own CPU time (all threads of
the process, ZMQ's I/O thread included) per message. The protocol overhead is bsread "none"
against raw. Then, in this process with one thread: the codec's own CPU per message (encode,
decode), and bitshuffle_lz4 compression and validated decompression throughput of the image,
and its compression ratio.

Usage: python bench/bsread_stream.py [--seconds 3] [--json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before bitshuffle is imported: one thread

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import zmq  # noqa: E402

from shmcam.bsread import Decoder, Encoder, Receiver, Sender  # noqa: E402
from shmcam.bsread.compression import BITSHUFFLE_LZ4, compress, decompress  # noqa: E402

HEIGHT, WIDTH = 2160, 2560
QUEUE = 4  # messages ZMQ may queue on each side
IDLE = 1.0  # seconds without a message that end a receiver


def beam_image(seed: int) -> np.ndarray:
    """A noisy beam image: a Gaussian spot on a dark offset with read noise (not zeros, so
    that compression figures are honest)."""
    rng = np.random.default_rng(seed)
    y, x = np.ogrid[:HEIGHT, :WIDTH]
    spot = 3000.0 * np.exp(
        -((x - 1300.0) ** 2 / (2 * 220.0**2) + (y - 1050.0) ** 2 / (2 * 140.0**2))
    )
    noisy = 100.0 + spot + rng.normal(0.0, 8.0, (HEIGHT, WIDTH))
    return np.clip(noisy, 0, 65535).astype(np.uint16)


def pipeline_output(image: np.ndarray) -> dict:
    """The image and ~30 channels of cam_server's standard processing, in its order and types."""
    x_axis = np.linspace(0, WIDTH - 1, WIDTH, dtype=np.float32)
    y_axis = np.linspace(0, HEIGHT - 1, HEIGHT, dtype=np.float32)
    x_profile, y_profile = image.sum(axis=0, dtype=np.int64), image.sum(axis=1, dtype=np.int64)
    fit = {
        f"{axis}_fit_{name}": value
        for axis in "xy"
        for name, value in (
            ("offset", 100.0),
            ("amplitude", 3000.0),
            ("standard_deviation", 180.0),
            ("mean", 1200.0),
        )
    }
    return {
        "x_axis": x_axis,
        "y_axis": y_axis,
        "image": image,
        "width": WIDTH,
        "height": HEIGHT,
        "processing_parameters": json.dumps(
            {"camera_name": "bench", "function": "standard", "threshold": 10}
        ),
        "timestamp": time.time(),
        "min_value": image.min(),
        "max_value": image.max(),
        "x_profile": x_profile,
        "y_profile": y_profile,
        "intensity": int(x_profile.sum()),
        "x_fwhm": 518.1,
        "y_fwhm": 329.7,
        "x_center_of_mass": 1300.2,
        "x_rms": 220.1,
        "y_center_of_mass": 1050.3,
        "y_rms": 140.2,
        "x_fit_gauss_function": x_profile.astype(np.float64),
        "y_fit_gauss_function": y_profile.astype(np.float64),
        **fit,
        "good_region": np.array([0, WIDTH, 0, HEIGHT]),
        "gr_intensity": int(x_profile.sum()),
    }


def receive_side(kind: str, conn) -> None:
    """Bind a PULL socket, report its address, count messages until the stream goes idle."""
    context = zmq.Context()
    if kind == "raw":  # the baseline: frames only, no decoding
        socket = context.socket(zmq.PULL)
        socket.rcvhwm = QUEUE
        socket.bind("tcp://127.0.0.1:0")
        address, close, rejected = socket.last_endpoint.decode(), socket.close, 0

        def receive(timeout):
            return socket.recv_multipart(copy=False) if socket.poll(timeout * 1000) else None
    else:
        receiver = Receiver(
            "tcp://127.0.0.1:0", mode="PULL", bind=True, queue_size=QUEUE, context=context
        )
        address, close, receive = receiver.address, receiver.close, receiver.receive
    conn.send(address)
    count, first, last = 0, None, None
    while receive(IDLE if count else 30) is not None:
        count += 1
        last = (time.perf_counter(), time.process_time())
        first = first or last
    if kind != "raw":
        rejected = receiver.rejected
    close()
    context.term()
    conn.send(
        {
            "messages": count,
            "seconds": last[0] - first[0],
            "cpu_ms": (last[1] - first[1]) * 1e3 / max(count - 1, 1),
            "rejected": rejected,
        }
    )


def send_side(kind: str, compression: str | None, address: str, seconds: float, conn) -> None:
    """Connect a PUSH socket and send as fast as the receiver takes messages for ``seconds``."""
    frames = [pipeline_output(beam_image(seed)) for seed in range(3)]
    encoder = Encoder(compression)
    prebuilt = [encoder.encode(frame, 0, (0, 0)) for frame in frames]  # the bytes raw sends
    context = zmq.Context()
    if kind == "raw":
        socket = context.socket(zmq.PUSH)
        socket.sndhwm = QUEUE
        socket.connect(address)
        close = socket.close

        def send(pulse):
            socket.send_multipart(prebuilt[pulse % 3], copy=False)
    else:
        sender = Sender(
            address,
            mode="PUSH",
            bind=False,
            queue_size=QUEUE,
            block=True,
            encoder=encoder,
            context=context,
        )
        close = sender.close

        def send(pulse):
            sender.send(frames[pulse % 3], pulse, (1700000000, pulse))

    pulse = 0
    start = (time.perf_counter(), time.process_time())
    while time.perf_counter() - start[0] < seconds:
        send(pulse)
        pulse += 1
    end = (time.perf_counter(), time.process_time())
    close()
    context.term()  # waits (LINGER, 1 s) for the queued messages to go out
    conn.send(
        {
            "messages": pulse,
            "seconds": end[0] - start[0],
            "cpu_ms": (end[1] - start[1]) * 1e3 / pulse,
            "wire_bytes": float(
                np.mean([sum(memoryview(part).nbytes for part in parts) for parts in prebuilt])
            ),
            "data_bytes": float(sum(np.asarray(value).nbytes for value in frames[0].values())),
        }
    )


def stream_run(kind: str, compression: str | None, seconds: float) -> dict:
    spawn = multiprocessing.get_context("spawn")
    receiver_end, receiver_conn = spawn.Pipe()
    sender_end, sender_conn = spawn.Pipe()
    receiver = spawn.Process(target=receive_side, args=(kind, receiver_conn))
    receiver.start()
    sender = spawn.Process(
        target=send_side, args=(kind, compression, receiver_end.recv(), seconds, sender_conn)
    )
    sender.start()
    sent, received = sender_end.recv(), receiver_end.recv()
    sender.join()
    receiver.join()
    rate = received["messages"] / received["seconds"]
    return {
        "messages_per_s": rate,
        "data_MB_per_s": rate * sent["data_bytes"] / 1e6,
        "wire_MB_per_s": rate * sent["wire_bytes"] / 1e6,
        "wire_bytes_per_message": sent["wire_bytes"],
        "sender_cpu_ms_per_message": sent["cpu_ms"],
        "receiver_cpu_ms_per_message": received["cpu_ms"],
        "messages_sent": sent["messages"],
        "messages_received": received["messages"],
        "rejected": received["rejected"],
    }


def per_second(function, minimum_seconds: float = 1.0) -> tuple[float, object]:
    """CPU seconds per call of ``function`` (single thread), and its last result."""
    result = function()  # warm up
    calls, start = 0, time.process_time()
    while time.process_time() - start < minimum_seconds:
        result = function()
        calls += 1
    return (time.process_time() - start) / calls, result


def codec_figures() -> dict:
    """CPU per message of the protocol work alone (no sockets): encode and decode, uncompressed."""
    frame = pipeline_output(beam_image(0))
    encoder, decoder = Encoder(), Decoder()
    encode_s, parts = per_second(lambda: encoder.encode(frame, 1, (1700000000, 0)))
    decode_s, _ = per_second(lambda: decoder.decode(parts))
    return {"encode_us_per_message": encode_s * 1e6, "decode_us_per_message": decode_s * 1e6}


def compression_figures() -> dict:
    image = beam_image(0)
    compress_s, packed = per_second(lambda: compress(image, BITSHUFFLE_LZ4))
    view = memoryview(packed)
    decompress_s, _ = per_second(lambda: decompress(view, BITSHUFFLE_LZ4, 2, image.nbytes))
    return {
        "image_bytes": image.nbytes,
        "compressed_bytes": len(packed),
        "ratio": image.nbytes / len(packed),
        "compress_GB_per_s_per_core": image.nbytes / compress_s / 1e9,
        "compress_ms": compress_s * 1e3,
        "decompress_GB_per_s_per_core": image.nbytes / decompress_s / 1e9,
        "decompress_ms": decompress_s * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="length of each stream run (default 3)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object with all figures"
    )
    args = parser.parse_args()

    runs = {
        "raw": stream_run("raw", None, args.seconds),
        "none": stream_run("bsread", None, args.seconds),
        "bitshuffle_lz4": stream_run("bsread", BITSHUFFLE_LZ4, args.seconds),
    }
    overhead = {
        side: runs["none"][f"{side}_cpu_ms_per_message"] / runs["raw"][f"{side}_cpu_ms_per_message"]
        for side in ("sender", "receiver")
    }
    report = {
        "image": f"{WIDTH}x{HEIGHT} uint16",
        "channels": len(pipeline_output(beam_image(0))),
        "seconds": args.seconds,
        "cores": os.cpu_count(),
        "streams": runs,
        "protocol_overhead_vs_raw": overhead,
        "codec": codec_figures(),
        "bitshuffle_lz4": compression_figures(),
    }
    if args.json:
        print(json.dumps(report))
        return
    print(
        f"bsread stream of a {report['image']} beam image + {report['channels'] - 1} channels, "
        f"tcp://127.0.0.1 PUSH->PULL, {args.seconds:g} s per run, {report['cores']} cores"
    )
    print(
        f"{'run':<16}{'msg/s':>8}{'data MB/s':>11}{'wire MB/s':>11}"
        f"{'send CPU ms':>13}{'recv CPU ms':>13}"
    )
    for name, run in runs.items():
        print(
            f"{name:<16}{run['messages_per_s']:>8.1f}{run['data_MB_per_s']:>11.0f}"
            f"{run['wire_MB_per_s']:>11.0f}"
            f"{run['sender_cpu_ms_per_message']:>13.2f}{run['receiver_cpu_ms_per_message']:>13.2f}"
        )
    print(
        f"protocol overhead (none vs raw CPU per message): sender x{overhead['sender']:.3f}, "
        f"receiver x{overhead['receiver']:.3f} (target <= x1.10)"
    )
    print(
        f"codec alone, per message: encode {report['codec']['encode_us_per_message']:.0f} us, "
        f"decode {report['codec']['decode_us_per_message']:.0f} us"
    )
    figures = report["bitshuffle_lz4"]
    print(
        f"bitshuffle_lz4, 1 thread: compress {figures['compress_GB_per_s_per_core']:.2f} GB/s "
        f"({figures['compress_ms']:.1f} ms), decompress "
        f"{figures['decompress_GB_per_s_per_core']:.2f} GB/s ({figures['decompress_ms']:.1f} ms, "
        f"validated), ratio {figures['ratio']:.2f} (target >= 1 GB/s)"
    )


if __name__ == "__main__":
    main()
