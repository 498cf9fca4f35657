"""Real replicas of the service on loopback ports, for the deployment tests (the fixture is in their conftest)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.server import REPO_ROOT, RunningServer, start_server
from tests.support.admin import ADMIN_TOKEN
from tests.support.deploy import deployed_app_environment

REPLICA_COUNT = 3
# The committed models and the deployed upload limit; one intra-op thread each, as three replicas share a small
# machine with the rest of the suite.
REPLICA_ENV = {
    "DIGITS_MODEL_STORE_DIR": str(REPO_ROOT / "model_store"),
    "DIGITS_MAX_UPLOAD_BYTES": deployed_app_environment()["DIGITS_MAX_UPLOAD_BYTES"],
    "DIGITS_DEVICE": "cpu",
    "DIGITS_TORCH_THREADS": "1",
    "DIGITS_PREPROCESS_WORKERS": "1",
    "DIGITS_LOG_FORMAT": deployed_app_environment()["DIGITS_LOG_FORMAT"],
    # Every request logged, so a test can follow one from the balancer's log into the replica's.
    "DIGITS_ACCESS_LOG": "true",
    "DIGITS_ADMIN_TOKEN": ADMIN_TOKEN,
}


@dataclass
class Replicas:
    """The running replicas; ``restart`` brings one back on its old port, as a restarted container would be."""

    servers: list[RunningServer]
    log_dir: Path

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{server.port}" for server in self.servers]

    def restart(self, index: int) -> RunningServer:
        old = self.servers[index]
        old.stop()
        self.servers[index] = start_server(REPLICA_ENV, old.log_path, port=old.port)
        return self.servers[index]
