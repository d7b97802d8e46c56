"""Sender and Receiver on real ZMQ sockets over 127.0.0.1."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest
import zmq

from shmcam.bsread import Decoder, Encoder, Receiver, Sender

STAMP = (1700000000, 5)
LOCAL = "tcp://127.0.0.1:0"
MEGABYTE = np.arange(1 << 19, dtype=np.uint16)  # 1 MiB, so that TCP buffers hold only a few


class Net:
    """Sockets of one test on a context of their own. ``close`` closes them all, then checks
    that the context terminates (it hangs if anything was left open, or lingers unbounded)."""

    def __init__(self):
        self.context = zmq.Context()
        self.opened = []

    def sender(self, address=LOCAL, **options):
        options.setdefault("linger", 0.2)
        return self._keep(Sender(address, context=self.context, **options))

    def receiver(self, address, **options):
        options.setdefault("linger", 0.2)
        return self._keep(Receiver(address, context=self.context, **options))

    def client(self, kind, address, hwm=1):
        """A raw socket that reads only when told to."""
        socket = self._keep(self.context.socket(kind))
        socket.rcvhwm = hwm
        socket.linger = 0
        if kind == zmq.SUB:
            socket.subscribe(b"")
        socket.connect(address)
        return socket

    def _keep(self, thing):
        self.opened.append(thing)
        return thing

    def close(self):
        for thing in reversed(self.opened):
            thing.close()
        terminated = threading.Event()
        threading.Thread(
            target=lambda: (self.context.term(), terminated.set()), daemon=True
        ).start()
        assert terminated.wait(5), "zmq context did not terminate: a socket was left open"


@pytest.fixture
def net():
    network = Net()
    try:
        yield network
    finally:
        network.close()


def read(socket, timeout=2.0):
    """The next multipart message of a raw socket, or None after ``timeout`` seconds."""
    return socket.recv_multipart(copy=False) if socket.poll(timeout * 1000) else None


def send_until_received(sender, receive, timeout=5.0):
    """Send until the peer gets a message (PUB/SUB subscriptions take a moment to arrive)."""
    deadline = time.monotonic() + timeout
    pulse = 0
    while time.monotonic() < deadline:
        sender.send({"probe": pulse}, pulse, STAMP)
        got = receive()
        if got is not None:
            return got
        pulse += 1
    pytest.fail("no message arrived")


@pytest.mark.parametrize("sender_mode, receiver_mode", [("PUB", "SUB"), ("PUSH", "PULL")])
def test_messages_arrive_decoded_from_zero_copy_frames(net, sender_mode, receiver_mode):
    sender = net.sender(mode=sender_mode)
    receiver = net.receiver(sender.address, mode=receiver_mode, timeout=0.05)
    send_until_received(sender, receiver.receive)
    image = np.arange(300 * 400, dtype=np.uint16).reshape(300, 400)
    assert sender.send({"image": image, "label": "x"}, 42, STAMP)
    got = receiver.receive(timeout=5)
    assert got.pulse_id == 42 and got.format_changed and got.timestamps["image"] == STAMP
    assert np.array_equal(got.data["image"], image) and not got.data["image"].flags.writeable
    assert got.data["label"] == "x" and receiver.received >= 2 and receiver.rejected == 0


def test_fan_in_to_a_bound_receiver_from_connecting_senders(net):
    receiver = net.receiver("tcp://127.0.0.1:0", mode="PULL", bind=True, timeout=5)
    senders = [net.sender(receiver.address, mode="PUSH", bind=False, block=True) for _ in range(2)]
    for number, sender in enumerate(senders):
        assert sender.wait_for_clients(1, timeout=5)
        assert sender.send({"from": number}, number, STAMP)
    assert sorted(receiver.receive().data["from"] for _ in senders) == [0, 1]
    receiver.close()  # connect mode counts connected/disconnected events
    assert all(sender.wait_for_clients(0, timeout=5) for sender in senders)
    assert senders[0].seconds_without_clients > 0


def test_clients_are_counted_up_and_down(net):
    sender = net.sender(mode="PUB")
    assert sender.clients == 0 and sender.seconds_without_clients > 0
    first = net.receiver(sender.address)
    second = net.receiver(sender.address)
    assert sender.wait_for_clients(2, timeout=5)
    assert sender.clients == 2 and sender.seconds_without_clients == 0.0
    first.close()
    assert sender.wait_for_clients(1, timeout=5)
    second.close()
    assert sender.wait_for_clients(0, timeout=5)
    idle = sender.seconds_without_clients
    assert 0 < idle < 5


def test_libzmq_never_refuses_later_parts_of_an_accepted_message(net):
    """The claim Sender's atomicity rests on: the HWM is checked per message, not per part."""
    push = net._keep(net.context.socket(zmq.PUSH))
    push.sndhwm = 1
    push.linger = 0
    push.bind("inproc://atomic")
    pull = net.client(zmq.PULL, "inproc://atomic")
    accepted = 0
    for _ in range(10):
        try:
            push.send(b"first", zmq.SNDMORE | zmq.NOBLOCK)
        except zmq.Again:
            break
        for _ in range(500):  # far more parts than the HWM, all NOBLOCK: none refused
            push.send(b"x" * 100, zmq.SNDMORE | zmq.NOBLOCK)
        push.send(b"last", zmq.NOBLOCK)
        accepted += 1
    else:
        pytest.fail("the queue never filled")
    assert 1 <= accepted <= 3
    assert [len(read(pull)) for _ in range(accepted)] == [502] * accepted
    assert read(pull, 0.1) is None


def test_a_full_push_queue_drops_whole_messages(net):
    sender = net.sender(mode="PUSH", queue_size=1, linger=0)
    client = net.client(zmq.PULL, sender.address)
    assert sender.wait_for_clients(1, timeout=5)
    results = [
        sender.send({"image": MEGABYTE, "n": pulse, "s": "text"}, pulse, STAMP)
        for pulse in range(60)
    ]
    assert sender.sent == results.count(True) > 0
    assert sender.dropped == results.count(False) > 0
    decoder = Decoder()
    received = [
        decoder.decode(read(client)) for _ in range(sender.sent)
    ]  # torn ones would not decode
    assert read(client, 0.1) is None
    assert [message.pulse_id for message in received] == [
        pulse for pulse, ok in enumerate(results) if ok
    ]
    assert all(np.array_equal(message.data["image"], MEGABYTE) for message in received)


@pytest.mark.parametrize(
    "mode, client_kind", [("PUSH", zmq.PULL), ("PUB", zmq.SUB)], ids=["PUSH", "PUB"]
)
def test_latest_wins_gives_a_slow_client_the_newest_messages(net, mode, client_kind):
    sender = net.sender(mode=mode, latest_wins=True)
    client = net.client(client_kind, sender.address)
    decoder = Decoder()
    send_until_received(sender, lambda: read(client, 0.05))
    while read(client, 0.2) is not None:  # drain the probes
        pass
    before_sent, before_dropped = sender.sent, sender.dropped
    for pulse in range(1000, 1200):  # the client reads nothing meanwhile
        assert sender.send({"image": MEGABYTE}, pulse, STAMP)
    pulses = []
    while not pulses or pulses[-1] != 1199:
        parts = read(client, 5.0)
        assert parts is not None, f"the newest message never arrived; got {pulses}"
        pulses.append(decoder.decode(parts).pulse_id)
    assert pulses == sorted(pulses) and len(pulses) < 20  # a few stale ones, then the newest
    # the sending thread counts a message once its last part is queued, which the client may
    # see before that: wait until all 200 are counted, sent or dropped
    deadline = time.monotonic() + 5
    while sender.sent + sender.dropped - before_sent - before_dropped < 200:
        assert time.monotonic() < deadline, (sender.sent, sender.dropped)
        time.sleep(0.001)
    assert sender.sent - before_sent == len(pulses)
    assert sender.dropped - before_dropped == 200 - len(pulses)


def test_receive_timeout_returns_none(net):
    receiver = net.receiver("tcp://127.0.0.1:1", mode="PULL", timeout=0.2)
    started = time.monotonic()
    assert receiver.receive() is None
    assert 0.2 <= time.monotonic() - started < 2
    assert receiver.receive(timeout=0) is None


def test_bad_messages_are_logged_counted_and_skipped(net, caplog):
    sender = net.sender(mode="PUSH", block=True)
    receiver = net.receiver(sender.address, mode="PULL", timeout=5)
    assert sender.send_parts([b"not json", b"{}", b"", b""])
    assert sender.send({"ok": 1.0}, 7, STAMP)
    with caplog.at_level(logging.WARNING, logger="shmcam.bsread.stream"):
        got = receiver.receive()
    assert got.pulse_id == 7 and receiver.rejected == 1 and receiver.received == 1
    assert "main header is not UTF-8 JSON" in caplog.text


def test_blocking_send_with_timeout_drops_when_nobody_takes_it(net):
    sender = net.sender(mode="PUSH", block=True, send_timeout=0.2, linger=0)
    started = time.monotonic()
    assert not sender.send({"x": 1}, 1, STAMP)
    assert time.monotonic() - started >= 0.19 and sender.dropped == 1 and sender.sent == 0


def test_tracker_tells_when_zmq_released_the_buffers(net):
    sender = net.sender(mode="PUSH", block=True, track=True)
    receiver = net.receiver(sender.address, mode="PULL", timeout=5)
    image = MEGABYTE.copy()
    assert sender.send({"image": image}, 1, STAMP)
    tracker = sender.tracker
    assert np.array_equal(receiver.receive().data["image"], image)
    tracker.wait(5)
    assert tracker.done


def test_port_zero_binds_a_free_port_and_reports_it(net):
    explicit = net.sender(LOCAL)
    any_interface = net.sender(0)
    assert explicit.address.startswith("tcp://127.0.0.1:") and not explicit.address.endswith(":0")
    assert any_interface.address.startswith(
        "tcp://0.0.0.0:"
    ) and not any_interface.address.endswith(":0")


def test_close_stops_the_latest_wins_thread_and_is_idempotent(net):
    sender = net.sender(mode="PUSH", latest_wins=True, linger=0)
    assert any(thread.name == f"bsread {sender.address}" for thread in threading.enumerate())
    sender.send({"x": 1}, 1, STAMP)  # nobody connected: it waits in the mailbox
    sender.close()
    sender.close()
    assert not any(thread.name == f"bsread {sender.address}" for thread in threading.enumerate())
    assert sender.dropped == 1
    with pytest.raises(RuntimeError, match="closed"):
        sender.send({"x": 1}, 2, STAMP)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="mode 'REQ'"):
        Sender(LOCAL, mode="REQ")
    with pytest.raises(ValueError, match="cannot block or track"):
        Sender(LOCAL, latest_wins=True, block=True)
    with pytest.raises(zmq.ZMQError):
        Sender("nonsense://x")


def test_encoded_parts_can_be_forwarded_unchanged(net):
    sender = net.sender(mode="PUSH", block=True)
    receiver = net.receiver(sender.address, mode="PULL", timeout=5)
    parts = Encoder(compression="bitshuffle_lz4").encode({"v": np.arange(10000)}, 3, STAMP)
    assert sender.send_parts(parts)
    assert np.array_equal(receiver.receive().data["v"], np.arange(10000))
