"""`cam_server.pipeline.data_processing`: see shmcam/camserver/__init__.py."""
