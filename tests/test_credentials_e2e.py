"""Credentials the cloud refuses: a wrong secret key, an expired token, a skewed clock.

The CLI's ``main`` in process against the in-memory cloud (the simulator's world, which checks
the secret key and the token's expiry like the gateway does); the clock skew, which only a
signed HTTP request can show, with the real CLI in a subprocess against the simulator on
127.0.0.1. The gateway locks an access key after 5 bad signatures in a row; the tool must stop
a refused tenant after its first 401, say what to fix, remember the refusal in the checkpoint
so that cron runs do not walk the key into the lock, and let the other tenants finish.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from orchestrator.simulator.app import build_app, serve
from orchestrator.simulator.harness import Cloud
from orchestrator.simulator.scenario import build_world
from orchestrator.simulator.truth import Truth
from orchestrator.simulator.world import World
from tests.inprocess import LocalCloud

LOCK_AFTER = 5  # the gateway's lock-out
MOST_TRIES = 3  # what the tool may ever send with a refused key
WRONG_SECRET = "this-is-not-the-secret-key-of-t1-000000"
CHECK_KEYS = (
    "(the access key or secret key is wrong, or the key is disabled: check the credential "
    "environment variables of this tenant)"
)


def refusal_line(stderr: str, tenant: str) -> str:
    """The one line of the run's output that says the tenant's credentials were refused."""
    (line,) = [x for x in stderr.splitlines() if x.startswith(f"tenant {tenant}: credentials")]
    return line


def tries_with(truth: Truth, access_key: str) -> int:
    """Requests the gateway refused for this access key (counted, or refused while locked)."""
    return truth.auth_failures.get(access_key, 0) + truth.auth_locked.get(access_key, 0)


def test_wrong_secret_blocks_one_tenant_across_cron_runs(local_cloud: LocalCloud) -> None:
    """A wrong secret key: the tenant stops after its first 401 with what to check, 4 cron runs
    send it at most once in all (never near the lock-out), the others finish; once the key is
    fixed the tenant proceeds."""
    cloud = local_cloud
    cloud.populate(tenants=3, per_tenant=2)
    cloud.start()
    access_key = cloud.accounts[1]["access_key"]
    wrong = cloud.env(E2E_T1_SK=WRONG_SECRET)
    for attempt in range(4):
        done = cloud.run("--quiet", env=wrong)
        assert done.returncode == 1, (attempt, done.stderr)
        line = refusal_line(done.stderr, "t1")
        assert line.startswith("tenant t1: credentials refused (APIGW.0301: "), line
        assert CHECK_KEYS in line
        assert "E2E_T1_AK" in line
        assert "E2E_T1_SK" in line
        truth = cloud.truth()
        assert tries_with(truth, access_key) == 1  # the first run's probe, and nothing since
        assert truth.locked_keys == ()
        states = {key.split("/")[0]: state for key, state in cloud.item_states().items()}
        assert states["t0"] == states["t2"] == "succeeded"
        assert {s for k, s in cloud.item_states().items() if k.startswith("t1/")} == {"pending"}
    assert tries_with(cloud.truth(), access_key) <= MOST_TRIES < LOCK_AFTER
    blocked = cloud.checkpoint()["meta"]["blocked"]
    assert set(blocked) == {"t1"}
    assert WRONG_SECRET not in (cloud.state_dir / "checkpoint.json").read_text()

    fixed = cloud.run()
    assert fixed.returncode == 0, fixed.stderr
    assert set(cloud.item_states().values()) == {"succeeded"}
    assert tries_with(cloud.truth(), access_key) == 1
    assert cloud.truth().duplicates == ()


def test_an_expired_token_is_named(local_cloud: LocalCloud) -> None:
    """Temporary credentials whose token has expired: APIGW.0307 is named, with what to do;
    the tenant is tried once, the other tenant finishes."""
    cloud = local_cloud
    cloud.populate(tenants=2, per_tenant=2)
    cloud.accounts[1].update(security_token="token-of-t1", token_expires_at=1000.0)
    cloud.start()
    config = cloud.config_path.read_text().replace(
        "[tenants.t1]\n", '[tenants.t1]\nsecurity_token_env = "E2E_T1_TOKEN"\n'
    )
    cloud.config_path.write_text(config)
    done = cloud.run(env=cloud.env(E2E_T1_TOKEN="token-of-t1"))
    assert done.returncode == 1, done.stderr
    line = refusal_line(done.stderr, "t1")
    assert line.startswith(
        "tenant t1: credentials refused (APIGW.0307: The token must be updated (the temporary "
        "security token has expired: refresh the token and run again))"
    ), line
    assert "E2E_T1_TOKEN" in line
    truth = cloud.truth()
    assert tries_with(truth, cloud.accounts[1]["access_key"]) == 1
    assert {k.split("/")[0] for k, s in cloud.item_states().items() if s == "succeeded"} == {"t0"}


def test_a_missing_permission_is_asked_again_by_the_next_run(local_cloud: LocalCloud) -> None:
    """IAM refuses t1's project look-up (403): t1 stops this run only, the line names
    iam:projects:list, nothing is remembered; once granted, the next cron run proceeds."""
    cloud = local_cloud
    cloud.populate(tenants=2, per_tenant=2)
    cloud.accounts[1]["denied"] = ["iam"]
    cloud.start()
    done = cloud.run("--quiet")
    assert done.returncode == 1, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("tenant t1: permission")]
    assert "iam:projects:list" in line, line
    assert "not remembered" in line, line
    assert "blocked" not in cloud.checkpoint()["meta"]
    assert cloud.world is not None
    cloud.world.account("t1").denied.clear()  # the permission is granted
    again = cloud.run("--quiet")
    assert again.returncode == 0, again.stderr
    assert set(cloud.item_states().values()) == {"succeeded"}


def test_an_ims_policy_deny_is_not_a_bad_key(local_cloud: LocalCloud) -> None:
    """IMS answers 403 APIGW.0302 to t1's listing: blocked for this run, asked again next."""
    cloud = local_cloud
    cloud.populate(tenants=2, per_tenant=1)
    cloud.accounts[1]["denied"] = ["list"]
    cloud.start()
    for _ in range(2):  # each cron run asks again (and is refused again)
        done = cloud.run("--quiet")
        assert done.returncode == 1, done.stderr
        assert "tenant t1: permission refused (APIGW.0302: " in done.stderr
    assert cloud.world is not None
    cloud.world.account("t1").denied.clear()
    assert cloud.run("--quiet").returncode == 0


@contextmanager
def simulator_in_thread(world: World, now: Callable[[], float]) -> Iterator[int]:
    """Serve ``world`` on 127.0.0.1 from a thread of this process with its own clock; the port."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    port: list[int] = []
    stop: list[asyncio.Event] = []

    async def main() -> None:
        stop.append(asyncio.Event())
        runner, bound = await serve(build_app(world, None, now=now))
        port.append(bound)
        ready.set()
        try:
            await stop[0].wait()
        finally:
            await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(10), "the simulator did not start"
        yield port[0]
    finally:
        if stop:
            loop.call_soon_threadsafe(stop[0].set)
        thread.join(10)
        loop.close()


@pytest.mark.e2e
def test_clock_skew_is_named(cloud: Cloud) -> None:
    """This machine's clock 20 minutes ahead of the cloud's: APIGW.0303 is named as clock skew,
    with the fix (NTP); the key is tried once."""
    cloud.populate(tenants=1, per_tenant=2)
    world, _ = build_world(
        {"version": 1, "params": cloud.params, "accounts": cloud.accounts, "images": cloud.images}
    )
    with simulator_in_thread(world, lambda: time.time() - 20 * 60) as port:
        cloud.port = port
        cloud.write_list()
        cloud.write_config()
        done = cloud.run()
    assert done.returncode == 1, done.stderr
    line = refusal_line(done.stderr, "t0")
    assert line.startswith("tenant t0: credentials refused (APIGW.0303: "), line
    assert (
        "(the request date is more than 15 minutes off the cloud's clock: fix this machine's "
        "clock (NTP))"
    ) in line
    assert world.auth_failures[cloud.accounts[0]["access_key"]] == 1
    assert world.submissions == {}
