"""ImsClient over the real transport (``wire.py``), where the socket itself matters: timeouts,
resets, a refused connection (not sent: safe to send again) against one that was lost (maybe
sent: never re-POSTed), and the proxy and TLS settings. The script is ``tests/fake_ims.py``
served on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import Any

import anyio
import pytest
from aiohttp import web
from yarl import URL

from orchestrator.config import Config, Endpoints
from orchestrator.core.cloud import CloudError, ErrorKind
from orchestrator.ims.proxy import env_proxy, proxy_problem
from orchestrator.ims.wire import WireTransport, ssl_context
from tests.fake_ims import (
    COPY,
    COPY_PATH,
    PROJECT_ID,
    QUOTA,
    REGION,
    START,
    TIMEOUT,
    FakeCloud,
    Harness,
    answer,
    build_harness,
    closed_port,
    drop,
    hang,
)
from tests.virtual_clock import InstantClock, VirtualClock


@pytest.fixture
def clock() -> VirtualClock:
    return InstantClock(START)


@pytest.fixture
def cloud(clock: VirtualClock) -> Iterator[FakeCloud]:
    fake = FakeCloud(clock)
    yield fake
    fake.release.set()
    assert fake.problems == [], "requests the gateway would have rejected"


@pytest.fixture
async def runner(cloud: FakeCloud) -> AsyncIterator[tuple[web.AppRunner, FakeCloud]]:
    """The script served on 127.0.0.1."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", cloud.serve)
    app_runner = web.AppRunner(
        app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
    )
    await app_runner.setup()
    site = web.TCPSite(app_runner, "127.0.0.1", 0)
    await site.start()
    cloud.port = app_runner.addresses[0][1]
    try:
        yield app_runner, cloud
    finally:
        cloud.release.set()
        await app_runner.cleanup()


@pytest.fixture
def make(cloud: FakeCloud, clock: VirtualClock) -> Iterator[Callable[..., Harness]]:
    """Clients whose requests go over a socket (to ``cloud`` once ``runner`` serves it)."""
    transport = WireTransport(TIMEOUT)
    yield partial(build_harness, cloud, clock, transport)
    transport.close()


@pytest.mark.usefixtures("runner")
async def test_get_timeout_is_transient_and_retried(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """A read that hangs past request_timeout is TRANSIENT, retried, then given up."""
    cloud.on("GET", QUOTA, hang)
    harness = make(max_attempts=2)
    with anyio.fail_after(5):
        with pytest.raises(CloudError) as caught:
            await harness.client.get_quota(REGION)
    assert caught.value.kind is ErrorKind.TRANSIENT
    assert "no answer within" in str(caught.value)
    assert len(cloud.requests("GET", QUOTA)) == 2
    assert len(harness.sleeps) == 1


@pytest.mark.usefixtures("runner")
async def test_get_reset_is_transient_and_retried(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """A read whose connection is reset every time is TRANSIENT, retried, then given up:
    one GET per attempt (the transport never resends on its own)."""
    cloud.on("GET", QUOTA, drop(rst=True))
    harness = make(max_attempts=3)
    with pytest.raises(CloudError) as caught:
        await harness.client.get_quota(REGION)
    assert caught.value.kind is ErrorKind.TRANSIENT
    assert len(harness.sleeps) == 2
    assert len(cloud.requests("GET", QUOTA)) == 3


async def test_copy_to_a_closed_port_is_not_sent_and_retried(
    runner: tuple[web.AppRunner, FakeCloud], make: Callable[..., Harness]
) -> None:
    """Connection refused means nothing was sent: retried, and it succeeds once IMS listens."""
    app_runner, cloud = runner
    port = closed_port()
    region = "cn-late-1"
    cloud.project_ids[region] = PROJECT_ID
    path = f"/ims/{region}/v1/cloudimages/src-1/cross_region_copy"
    cloud.on("POST", path, answer(200, {"job_id": "job-late"}))

    async def start_listening(_seconds: float) -> None:
        if not any(getattr(site, "_port", None) == port for site in app_runner.sites):
            await web.TCPSite(app_runner, "127.0.0.1", port).start()

    harness = make(
        project_ids={region: PROJECT_ID},
        ims_by_region={region: f"http://127.0.0.1:{port}/ims/{region}"},
        retry_sleep=start_listening,
    )
    assert await harness.client.copy_image(region, "src-1", COPY) == "job-late"
    assert len(harness.sleeps) == 1
    assert len(cloud.requests("POST", path)) == 1


async def test_copy_to_a_closed_port_ends_not_sent(make: Callable[..., Harness]) -> None:
    """Refused on every attempt: NOT_SENT after the attempt budget, safe for the engine to retry."""
    port = closed_port()
    harness = make(
        project_ids={"cn-dead-1": PROJECT_ID},
        ims_by_region={"cn-dead-1": f"http://127.0.0.1:{port}/ims"},
        max_attempts=3,
    )
    with pytest.raises(CloudError) as caught:
        await harness.client.copy_image("cn-dead-1", "src-1", COPY)
    assert caught.value.kind is ErrorKind.NOT_SENT
    assert len(harness.sleeps) == 2


@pytest.mark.usefixtures("runner")
@pytest.mark.parametrize("rst", [True, False], ids=["reset", "closed"])
async def test_copy_connection_lost_is_unknown_and_never_resent(
    cloud: FakeCloud, make: Callable[..., Harness], rst: bool
) -> None:
    """The server read the POST and dropped the connection: UNKNOWN at once, one POST seen."""
    cloud.on("POST", COPY_PATH, drop(rst=rst), answer(200, {"job_id": "job-2"}))
    harness = make()
    with pytest.raises(CloudError) as caught:
        await harness.client.copy_image(REGION, "src-1", COPY)
    assert caught.value.kind is ErrorKind.UNKNOWN
    assert len(cloud.requests("POST", COPY_PATH)) == 1
    assert harness.sleeps == []


@pytest.mark.usefixtures("runner")
async def test_copy_timeout_is_unknown_and_never_resent(
    cloud: FakeCloud, make: Callable[..., Harness]
) -> None:
    """A POST without an answer within request_timeout is UNKNOWN at once; one POST seen."""
    cloud.on("POST", COPY_PATH, hang, answer(200, {"job_id": "job-2"}))
    harness = make()
    with anyio.fail_after(5):
        with pytest.raises(CloudError) as caught:
            await harness.client.copy_image(REGION, "src-1", COPY)
    assert caught.value.kind is ErrorKind.UNKNOWN
    assert len(cloud.requests("POST", COPY_PATH)) == 1
    assert harness.sleeps == []


def test_the_proxy_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTPS_PROXY is used for the IMS hosts, except the ones NO_PROXY names."""
    for name in ("https_proxy", "http_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "iam.example.com")
    proxy, _ = env_proxy(URL("https://ims.cn-north-4.example.com"))
    assert proxy == URL("http://proxy.example:3128")
    assert env_proxy(URL("https://iam.example.com")) == (None, None)


def test_an_https_proxy_is_used_not_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTPS_PROXY=https://...: the requests go through it (aiohttp's own reading drops it)."""
    for name in ("https_proxy", "http_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "https://proxy.example:3129")
    proxy, _ = env_proxy(URL("https://ims.cn-north-4.example.com"))
    assert proxy == URL("https://proxy.example:3129")


def test_an_unusable_proxy_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A SOCKS proxy: the variable is named, its value (maybe a password) never. An https://
    proxy is usable (TLS inside TLS: tests/test_ims_wire.py)."""
    socks = proxy_problem({"HTTPS_PROXY": "socks5://user:secret@proxy:1080"})
    assert socks is not None
    assert "HTTPS_PROXY" in socks
    assert "secret" not in socks
    assert proxy_problem({"https_proxy": "https://user:secret@proxy:3129"}) is None


def test_a_missing_ca_bundle_says_so(tmp_path: Any) -> None:
    """A CA bundle that cannot be read is a PERMANENT error naming the setting."""
    config = Config(endpoints=Endpoints(ca_bundle=str(tmp_path / "missing.pem")))
    with pytest.raises(CloudError, match="ca_bundle"):
        ssl_context(config)


@pytest.mark.parametrize(
    ("proxy_url", "netrc_text"),
    [
        ("http://alice:s3cret@proxy.example:3128", None),
        ("http://al%40ice:p%3Ass@proxy.example:3128", None),
        ("http://alice@proxy.example:3128", None),
        ("http://proxy.example:3128", "machine proxy.example login bob password pw\n"),
        ("http://proxy.example:3128", "default login carol password c\n"),
        ("http://proxy.example:3128", "machine other.example login bob password pw\n"),
        ("http://proxy.example:3128", None),
    ],
)
def test_proxy_credentials_are_aiohttps_and_curls(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, proxy_url: str, netrc_text: str | None
) -> None:
    """From the proxy URL, else from the netrc file: the same Basic value aiohttp's helpers
    make (the oracle), the proxy URL without its credentials."""
    from aiohttp.helpers import basicauth_from_netrc, netrc_from_env, strip_auth_from_url

    for name in ("https_proxy", "http_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTPS_PROXY", proxy_url)
    netrc_path = tmp_path / "netrc"
    if netrc_text is not None:
        netrc_path.write_text(netrc_text)
    monkeypatch.setenv("NETRC", str(netrc_path))
    proxy, auth = env_proxy(URL("https://ims.cn-north-4.example.com"))
    bare, expected = strip_auth_from_url(URL(proxy_url))
    if expected is None:
        try:
            expected = basicauth_from_netrc(netrc_from_env(), "proxy.example")
        except LookupError:
            expected = None
    assert proxy == bare
    assert auth == (None if expected is None else expected.encode())
