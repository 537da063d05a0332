import os

import pytest

# Keep the sampler's BLAS single-threaded in tests too, and keep Prefect quiet if imported.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


@pytest.fixture
def cli_env(monkeypatch, tmp_path):
    """Environment keys the CLI sets, registered with monkeypatch so they are restored; Prefect's
    home inside the test's folder."""
    for key, value in {"PREFECT_HOME": str(tmp_path / "prefect-home"), "DO_NOT_TRACK": "1",
                       "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                       "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "ERROR",
                       "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}.items():
        monkeypatch.setenv(key, value)
