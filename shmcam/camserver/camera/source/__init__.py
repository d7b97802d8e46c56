"""`cam_server.camera.source`: see shmcam/camserver/__init__.py."""
