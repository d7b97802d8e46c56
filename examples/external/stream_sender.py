#!/usr/bin/env python3
"""projections.py sending its own bsread stream to SHMCAM_OUTPUT_STREAM instead of writing the
output ring: for programs that want their stream's format in their own hands. It binds the
address it is given, in the mode it is given (PUB or PUSH), and counts what it sends in the
statistics block itself, since shmcam does not publish for it (docs/external.md).
"""

from projections import projections

from shmcam.bsread import Sender
from shmcam.external import Program


def main() -> None:
    with Program() as program, Sender(program.output_stream, mode=program.output_mode) as sender:
        for item in program.inputs():
            result = projections(item.image, program.config.get("threshold", 0.0))
            if program.intact(item) and sender.send(result, item.pulse_id, item.timestamp):
                program.processed(
                    sent_bytes=result["x_profile"].nbytes + result["y_profile"].nbytes
                )


if __name__ == "__main__":
    main()
