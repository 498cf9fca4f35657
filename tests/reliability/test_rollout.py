"""A new version reaches every replica: replicas that poll the store (``DIGITS_RELOAD_INTERVAL_S``, set in compose)
each swap it in within one polling period, with no admin call, and readiness reports the versions each serves, so
a mixed fleet mid-rollout is visible to whoever polls it."""

from __future__ import annotations

import time

import httpx

from contract import ModelStore
from tests.support.servers import ServerFactory, record_figures, server_env
from tests.support.stand_ins import publish

POLL_INTERVAL_S = 0.5
# A reload loads, verifies and warms the new version after the poll that finds it.
RELOAD_SLACK_S = 5.0
SAMPLE_S = 0.05


def served_versions(url: str) -> dict[str, int]:
    response = httpx.get(f"{url}/health/ready", timeout=RELOAD_SLACK_S)
    assert response.status_code == 200
    versions: dict[str, int] = response.json()["versions"]
    return versions


def test_a_published_version_reaches_every_polling_replica(store: ModelStore, serve: ServerFactory) -> None:
    polling = [serve(server_env(store.root, reload_interval_s=POLL_INTERVAL_S)) for _ in range(2)]
    # A replica that does not poll shows what a fleet with a straggler looks like from readiness.
    straggler = serve(server_env(store.root))
    before = [served_versions(server.url) for server in (*polling, straggler)]

    publish(store, "cnn")
    published_at = time.monotonic()
    reached_after_s: list[float] = []
    for server in polling:
        while (
            served_versions(server.url)["cnn"] != 2
            and time.monotonic() - published_at < POLL_INTERVAL_S + RELOAD_SLACK_S
        ):
            time.sleep(SAMPLE_S)
        reached_after_s.append(time.monotonic() - published_at)
    after = [served_versions(server.url) for server in (*polling, straggler)]
    record_figures(
        "rollout", {"poll_interval_s": POLL_INTERVAL_S, "reached_after_s": [round(s, 2) for s in reached_after_s]}
    )

    assert before == [{"cnn": 1, "lenet5": 1, "mlp": 1}] * 3
    assert after == [{"cnn": 2, "lenet5": 1, "mlp": 1}] * 2 + [{"cnn": 1, "lenet5": 1, "mlp": 1}]
    assert max(reached_after_s) <= POLL_INTERVAL_S + RELOAD_SLACK_S
