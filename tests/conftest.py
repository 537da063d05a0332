import os

# Keep the sampler's BLAS single-threaded in tests too, and keep Prefect quiet if imported.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
