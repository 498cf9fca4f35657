"""The load-balanced topology for real: Debian's nginx with deploy/nginx's configuration in front of replicas.

Only the addresses differ from the Docker deployment: nginx listens on a free loopback port instead of 8080,
and each replica's loopback address replaces Docker's DNS name ``app:8000``. The ``resolve`` flag goes with the
name: it re-resolves names, loopback addresses have none to resolve (and Debian 12's nginx 1.22 predates it).
Every other directive, limit and error page is the deployed one. Each test sends from its own loopback source
address, so the per-client rate limit sees each test as a separate client.
"""

from __future__ import annotations

import io
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageDraw
from prometheus_client.parser import text_string_to_metric_families

from harness.server import free_port, wait_until_healthy
from service.uploads import upload_too_large
from tests.support.admin import ADMIN_TOKEN
from tests.support.deploy import NGINX_CONF, UPSTREAM_CONF, nginx_body_limit_bytes
from tests.support.replicas import Replicas

pytestmark = pytest.mark.slow

DEPLOYED_LISTEN = "listen 8080;"
DEPLOYED_SERVER = re.compile(r"^server app:8000 resolve (?P<parameters>[^;]*);$", re.MULTILINE)
NGINX_READY_TIMEOUT_S = 30.0
# Generous: the machine may be busy with the rest of the suite.
CLIENT_TIMEOUT_S = 60.0
# The status recorded for an answer whose body was cut short after its headers had arrived.
CUT_SHORT = -1
REJOIN_TIMEOUT_S = 60.0
# Polling slower than the per-client rate (20 r/s) never trips the limit.
REJOIN_POLL_INTERVAL_S = 0.1
STREAM_CLIENTS = 4
REQUESTS_BEFORE_KILL = 20
REQUESTS_AFTER_KILL = 40
RATE_LIMIT_PROBES = 150
RATE_LIMIT_CONCURRENCY = 8
MULTIPART_BOUNDARY = "digits-deploy-test"


def _digit_png() -> bytes:
    """A thick dark stroke on white: a "1" that the service's preprocessing accepts."""
    image = Image.new("L", (64, 64), color=255)
    ImageDraw.Draw(image).line([(32, 10), (32, 54)], fill=0, width=7)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


DIGIT_PNG = _digit_png()


@dataclass
class LoadBalancer:
    process: subprocess.Popen[bytes]
    port: int
    prefix: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return "\n".join(
            path.read_text(errors="replace") for path in sorted(self.prefix.glob("*.log")) if path.is_file()
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=NGINX_READY_TIMEOUT_S)


@dataclass(frozen=True)
class Answer:
    """One request through the balancer: when it started, its status and the replicas nginx tried, in order."""

    started_s: float
    status: int
    tried: tuple[str, ...]

    @property
    def replica(self) -> str:
        return self.tried[-1] if self.tried else ""


def render_nginx_config(prefix: Path, listen_port: int, replica_addresses: Sequence[str]) -> Path:
    """Copy deploy/nginx into ``prefix`` with only the listen address and the replica addresses replaced."""
    conf = NGINX_CONF.read_text()
    if conf.count(DEPLOYED_LISTEN) != 1:
        raise ValueError(f"expected exactly one {DEPLOYED_LISTEN!r} in {NGINX_CONF}")
    upstream = UPSTREAM_CONF.read_text()
    servers = DEPLOYED_SERVER.findall(upstream)
    if len(servers) != 1:
        raise ValueError(f"expected exactly one 'server app:8000 resolve ...;' line in {UPSTREAM_CONF}")
    loopback_servers = "\n".join(f"server {address} {servers[0]};" for address in replica_addresses)
    (prefix / UPSTREAM_CONF.name).write_text(DEPLOYED_SERVER.sub(loopback_servers, upstream))
    target = prefix / NGINX_CONF.name
    target.write_text(conf.replace(DEPLOYED_LISTEN, f"listen 127.0.0.1:{listen_port};"))
    return target


def _nginx_binary() -> str:
    binary = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if binary is None:
        pytest.fail("nginx is not installed: run scripts/install-system-deps")
    return binary


def start_load_balancer(prefix: Path, replica_addresses: Sequence[str]) -> LoadBalancer:
    """Run nginx in the foreground with its state under ``prefix``; return once it answers."""
    port = free_port()
    conf = render_nginx_config(prefix, port, replica_addresses)
    # As root, nginx would hand its workers to "nobody", who cannot enter pytest's private temporary folders.
    user = pwd.getpwuid(os.geteuid()).pw_name
    command = [
        _nginx_binary(),
        "-p",
        f"{prefix}/",
        "-c",
        str(conf),
        "-e",
        str(prefix / "error.log"),
        "-g",
        f"daemon off; user {user};",
    ]
    with (prefix / "access.log").open("ab") as access_log, (prefix / "stderr.log").open("ab") as stderr_log:
        process = subprocess.Popen(command, stdout=access_log, stderr=stderr_log)
    balancer = LoadBalancer(process=process, port=port, prefix=prefix)
    try:
        wait_until_healthy(process, f"{balancer.url}/health/lb", NGINX_READY_TIMEOUT_S, balancer.logs)
    except RuntimeError:
        balancer.stop()
        raise
    return balancer


@pytest.fixture(scope="module")
def load_balancer(replicas: Replicas, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadBalancer]:
    balancer = start_load_balancer(tmp_path_factory.mktemp("nginx"), replicas.addresses)
    yield balancer
    balancer.stop()


def _client(balancer: LoadBalancer, source_address: str) -> httpx.Client:
    return httpx.Client(
        base_url=balancer.url,
        timeout=CLIENT_TIMEOUT_S,
        transport=httpx.HTTPTransport(local_address=source_address),
    )


def _post_digit(client: httpx.Client) -> Answer:
    started_s = time.monotonic()
    try:
        response = client.post("/predict", files={"file": ("digit.png", DIGIT_PNG, "image/png")})
    except httpx.RemoteProtocolError as exc:
        # The balancer had passed on the replica's status line and headers when the replica died: it cannot retry.
        return Answer(started_s, CUT_SHORT if "complete message body" in str(exc) else 0, ())
    except httpx.TransportError:
        return Answer(started_s, 0, ())
    tried = tuple(address.strip() for address in response.headers.get("x-replica", "").split(",") if address)
    return Answer(started_s, response.status_code, tried)


def _requests_seen(server_url: str) -> float:
    """Requests a replica has counted in its /metrics, except the scrapes of /metrics itself."""
    families = text_string_to_metric_families(httpx.get(f"{server_url}/metrics", timeout=CLIENT_TIMEOUT_S).text)
    return sum(
        sample.value
        for family in families
        if family.name == "digits_http_requests"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("route") != "/metrics"
    )


class RequestStream:
    """Clients on their own loopback source addresses posting digits back to back until the stream is closed."""

    def __init__(self, balancer: LoadBalancer, clients: int) -> None:
        self.answers: list[Answer] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(_client(balancer, f"127.0.1.{index + 1}"),), daemon=True)
            for index in range(clients)
        ]

    def __enter__(self) -> RequestStream:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=CLIENT_TIMEOUT_S)

    def wait_for(self, count: int) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.answers) >= count, timeout=CLIENT_TIMEOUT_S):
                raise TimeoutError(f"{len(self.answers)} of {count} requests answered")

    def _run(self, client: httpx.Client) -> None:
        with client:
            while not self._stop.is_set():
                answer = _post_digit(client)
                with self._changed:
                    self.answers.append(answer)
                    self._changed.notify_all()


def test_requests_are_spread_over_all_replicas(load_balancer: LoadBalancer, replicas: Replicas) -> None:
    with _client(load_balancer, "127.0.0.2") as client:
        answers = [_post_digit(client) for _ in range(5 * len(replicas.servers))]

    assert {answer.status for answer in answers} == {200}
    assert {answer.replica for answer in answers} == set(replicas.addresses)


def test_admin_endpoints_are_not_forwarded_even_with_the_token(load_balancer: LoadBalancer, replicas: Replicas) -> None:
    seen_before = [_requests_seen(server.url) for server in replicas.servers]
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    with _client(load_balancer, "127.0.0.7") as client:
        responses = [
            client.post(path, headers=admin)
            for path in ("/models/reload", "/models/reload/", "/models//reload", "/models/%72eload")
        ]
    seen_after = [_requests_seen(server.url) for server in replicas.servers]
    direct = httpx.post(f"{replicas.servers[0].url}/models/reload", headers=admin, timeout=CLIENT_TIMEOUT_S)

    assert [(str(response.request.url), response.status_code) for response in responses] == [
        (str(response.request.url), 403) for response in responses
    ]
    for response in responses:
        assert response.json()["detail"].startswith("Admin endpoints are not forwarded by the load balancer.")
        assert "x-replica" not in response.headers
    assert seen_after == seen_before
    assert direct.status_code == 200


def test_request_id_joins_the_balancer_log_the_answer_and_the_replica_log(
    load_balancer: LoadBalancer, replicas: Replicas
) -> None:
    with _client(load_balancer, "127.0.0.8") as client:
        response = client.post("/predict", files={"file": ("digit.png", DIGIT_PNG, "image/png")})
    request_id = response.headers["x-request-id"]
    replica = replicas.servers[replicas.addresses.index(response.headers["x-replica"])]
    time.sleep(0.2)  # nginx writes the access line once the response is sent

    balancer_line = next(
        json.loads(line) for line in load_balancer.logs().splitlines() if f'"request_id":"{request_id}"' in line
    )
    replica_lines = [json.loads(line) for line in replica.log().splitlines() if request_id in line]
    assert response.status_code == 200
    assert response.json()["request_id"] == request_id
    assert len(request_id) == 32
    assert (balancer_line["uri"], balancer_line["status"]) == ("/predict", 200)
    access = next(line for line in replica_lines if line["logger"] == "uvicorn.access")
    shared = {"request_id", "method", "uri", "status"}
    assert {key: access[key] for key in shared} == {key: balancer_line[key] for key in shared}
    assert set(access) >= {"time", "level", "client", *shared}


def test_killed_replica_loses_no_request_and_rejoins_after_restart(
    load_balancer: LoadBalancer, replicas: Replicas
) -> None:
    victim = replicas.addresses[0]
    try:
        with RequestStream(load_balancer, clients=STREAM_CLIENTS) as stream:
            stream.wait_for(REQUESTS_BEFORE_KILL)
            replicas.servers[0].stop(signal.SIGKILL)
            dead_since_s = time.monotonic()
            stream.wait_for(len(stream.answers) + REQUESTS_AFTER_KILL)
    finally:
        replicas.restart(0)
    with _client(load_balancer, "127.0.0.3") as client:
        deadline = time.monotonic() + REJOIN_TIMEOUT_S
        rejoined = [_post_digit(client)]
        while rejoined[-1].replica != victim and time.monotonic() < deadline:
            time.sleep(REJOIN_POLL_INTERVAL_S)
            rejoined.append(_post_digit(client))

    # Every request is answered: a replica sends each answer in one write (service.http_protocol), so nginx never
    # holds the headers of an answer whose body died with the replica, which it could not send elsewhere.
    assert [answer.status for answer in stream.answers if answer.status != 200] == []
    assert victim in {answer.replica for answer in stream.answers if answer.started_s < dead_since_s}
    assert victim not in {answer.replica for answer in stream.answers if answer.started_s > dead_since_s}
    # Requests nginx sent to the dead replica were retried once on another replica instead of failing.
    assert any(answer.tried[0] == victim and len(answer.tried) == 2 for answer in stream.answers)
    assert [answer for answer in rejoined if answer.status != 200] == []
    assert rejoined[-1].replica == victim


def test_rate_limit_answers_429_with_retry_after(load_balancer: LoadBalancer) -> None:
    with (
        _client(load_balancer, "127.0.0.4") as client,
        ThreadPoolExecutor(max_workers=RATE_LIMIT_CONCURRENCY) as pool,
    ):
        responses = list(
            pool.map(
                lambda _: client.post("/predict", files={"file": ("digit.png", DIGIT_PNG, "image/png")}),
                range(RATE_LIMIT_PROBES),
            )
        )

    assert {response.status_code for response in responses} == {200, 429}
    limited = next(response for response in responses if response.status_code == 429)
    assert limited.headers["content-type"] == "application/json"
    assert limited.json() == {
        "detail": "Too many requests. Retry after the number of seconds in the Retry-After header."
    }
    assert limited.headers["retry-after"] == "1"
    # Answered by nginx itself: no replica was involved.
    assert "x-replica" not in limited.headers


def _upload_of_exactly(size_bytes: int) -> tuple[bytes, dict[str, str]]:
    """A multipart body of ``size_bytes`` in all, framing included, and its content type."""
    head = (
        f"--{MULTIPART_BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    tail = f"\r\n--{MULTIPART_BOUNDARY}--\r\n".encode()
    body = head + bytes(size_bytes - len(head) - len(tail)) + tail
    return body, {"content-type": f"multipart/form-data; boundary={MULTIPART_BOUNDARY}"}


def test_upload_over_the_limit_is_refused_by_nginx_before_any_replica(
    load_balancer: LoadBalancer, replicas: Replicas
) -> None:
    limit_bytes = nginx_body_limit_bytes()
    seen_before = [_requests_seen(server.url) for server in replicas.servers]
    body, headers = _upload_of_exactly(limit_bytes + 1)

    with _client(load_balancer, "127.0.0.5") as client:
        response = client.post("/predict", content=body, headers=headers)

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    # Word for word the service's own answer to the same upload.
    assert response.json() == {"detail": upload_too_large(limit_bytes).detail}
    assert "x-replica" not in response.headers
    assert [_requests_seen(server.url) for server in replicas.servers] == seen_before


def test_upload_at_the_limit_passes_nginx_and_reaches_a_replica(
    load_balancer: LoadBalancer, replicas: Replicas
) -> None:
    body, headers = _upload_of_exactly(nginx_body_limit_bytes())

    with _client(load_balancer, "127.0.0.6") as client:
        response = client.post("/predict", content=body, headers=headers)

    # A replica judged it: the size passes, the zero bytes are no image.
    assert response.headers["x-replica"] in replicas.addresses
    assert response.status_code in {400, 415}


def test_no_replica_answering_gives_a_json_502_after_one_retry(tmp_path: Path) -> None:
    nowhere = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    balancer = start_load_balancer(tmp_path, nowhere)
    try:
        response = httpx.post(
            f"{balancer.url}/predict", files={"file": ("digit.png", DIGIT_PNG, "image/png")}, timeout=CLIENT_TIMEOUT_S
        )
    finally:
        balancer.stop()

    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": "No replica of the service could answer. Retry in a moment."}
    assert sorted(address.strip() for address in response.headers["x-replica"].split(",")) == sorted(nowhere)
