"""`cam_server.pipeline`: see shmcam/camserver/__init__.py."""
