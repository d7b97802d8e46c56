"""A STAND-IN for SwissFEL's dispatcher, which cannot run here, and a beam-synchronous data
source like SwissFEL's, for the tests.

`StandInDispatcher` serves the dispatcher's REST protocol as bsread's client speaks it
(shmcam/workers/dispatcher.py has the details): `POST /stream` with the channels answers the
address of a new bsread stream of those channels, sent from this process; `DELETE /stream`
with the address releases it. It records every request, so a test can check what shmcam
asked for. It is not the dispatcher: it knows no channels of its own, checks nothing, and
streams what it is asked for.

`PulseStream` sends a message for every pulse id of a 100 Hz machine, the ids being the
wall clock in 10 ms units (as shmcam's simulated cameras number their frames), optionally
`lag` pulses late: data to be joined with camera frames by pulse id.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from shmcam.bsread import Sender


def value_of(channel: str, pulse_id: int) -> float:
    """What a stream sends for a channel at a pulse id (tests check it arrived so)."""
    return float(pulse_id * (len(channel) + 1))


class PulseStream:
    """bsread messages {channel: value_of(channel, pulse_id)} for every pulse id, `lag`
    pulses after their time, on `sender`, from a thread, until closed."""

    def __init__(self, sender: Sender, channels, lag: int = 0):
        self.sender, self.channels, self.lag = sender, list(channels), lag
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        last = time.time_ns() // 10_000_000 - self.lag
        while not self.stopping.wait(0.002):
            now = time.time_ns() // 10_000_000 - self.lag
            for pulse_id in range(last + 1, now + 1):
                data = {channel: value_of(channel, pulse_id) for channel in self.channels}
                try:
                    self.sender.send(data, pulse_id, divmod(pulse_id * 10_000_000, 10**9))
                except RuntimeError:  # closed under us
                    return
            last = now

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.sender.close()


class StandInDispatcher:
    """The stand-in: `url`, `requests` (the JSON bodies asked for), `removed` (addresses
    released); `refuse` makes it answer HTTP 500 to a stream request."""

    def __init__(self):
        self.requests: list[dict] = []
        self.removed: list[str] = []
        self.refuse = False
        self.streams: dict[str, PulseStream] = {}
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_port}/sf-databuffer"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _handler(self):
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length", 0)))

            def _answer(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                if self.path != "/sf-databuffer/stream":
                    return self._answer(404, {"error": f"no {self.path}"})
                request = json.loads(self._body())
                with stand_in.lock:
                    stand_in.requests.append(request)
                if stand_in.refuse:
                    return self._answer(500, {"error": "channel BS:NOPE unknown"})
                self._answer(200, {"stream": stand_in._open(request)})

            def do_DELETE(self) -> None:
                address = self._body().decode()
                with stand_in.lock:
                    stand_in.removed.append(address)
                    stream = stand_in.streams.pop(address, None)
                if stream is not None:
                    stream.close()
                self._answer(200, {})

        return Handler

    def _open(self, request: dict) -> str:
        mode = "PUSH" if request["streamType"] == "push_pull" else "PUB"
        sender = Sender("tcp://127.0.0.1:0", mode=mode, queue_size=1000, linger=0)
        stream = PulseStream(sender, [c["name"] for c in request["channels"]])
        with self.lock:
            self.streams[sender.address] = stream
        return sender.address

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        for stream in self.streams.values():
            stream.close()
