"""bsread: PSI's camera/beam-synchronous data protocol over ZMQ.

The codec (``Encoder``, ``Decoder``, ``Message``) is pure and socket-free; ``Sender`` and
``Receiver`` put it on ZMQ sockets. The wire format is described in ``docs/spec/bsread.md``.
"""

from .compression import codec_name
from .decoder import Decoder
from .encoder import Encoder
from .errors import BsreadError
from .message import Compressed, Message
from .stream import Receiver, Sender

__all__ = [
    "BsreadError",
    "Compressed",
    "Decoder",
    "Encoder",
    "Message",
    "Receiver",
    "Sender",
    "codec_name",
]
