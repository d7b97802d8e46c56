"""shmcam: camera frames ingested once into shared memory, processed by many local pipelines."""

__version__ = "0.1.0"
