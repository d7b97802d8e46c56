"""CamServer's module paths for user code written for it.

User scripts import `cam_server.pipeline.data_processing.functions`, `...processor`, the
camera base class `cam_server.camera.source.camera.Camera` and helpers of
`cam_server.pipeline.utils`. This package holds shmcam's own implementations at the same
paths below `shmcam.camserver`; `alias.install()` makes `cam_server.<path>` import
`shmcam.camserver.<path>` inside instance processes, unless the real CamServer package is
installed (then it wins). Written from docs/spec/camserver.md, not from CamServer's code.
"""
