"""`cam_server.camera`: see shmcam/camserver/__init__.py."""
