"""The database goes away under load: paused (SIGSTOP), stopped (SIGTERM, down a while, started
again), or restarted (kill -9, started again at once), always on the same port and data dir.

For each variant one scenario runs: a launcher with ONE gevent worker (so that a pile-up of requests
waiting for the database would show on every request it serves), four users each uploading small
files and fetching keys in a loop, and a /healthz prober. The tests then check what every client saw:

- every answer is a success or a 503 with ``Retry-After`` and a short plain message, never a 500;
- during the outage, requests that need the database fail fast (503) instead of waiting for it;
- /healthz (which does not touch the database) keeps answering quickly: requests do not pile up;
- the service recovers by itself, on the same workers;
- every upload that was acknowledged downloads and decrypts (Tink) to what was sent.

"During the outage" is defined by observed events, never by sleeps, so that a busy machine cannot
move a request across its edge: it starts once the database is confirmed away (every thread stopped,
or the process reaped) and ends just before we resume or restart it. Every request is timestamped
at its start and end by the client; only one that started and ended inside that window must be a
503. The outage lasts at least OUTAGE_SECONDS, and beyond that until the clients have seen it
(some 503s and a /healthz answer, all begun inside the window).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator

import pytest

from cryptofiles.dev.harness import Launcher
from tests.support.database import PinnedDatabase
from tests.support.load import Load, Outcome, check_acknowledged
from tests.support.loopback import Client, call, has_retry_after, is_short_plain_message
from tests.support.processes import wait_until
from tests.support.server import TIMEOUT_MS, launcher_env

pytestmark = pytest.mark.slow

USERS = 4  # the worker always busy, each request only briefly
OUTAGE_SECONDS = 8.0  # the least time the database is paused, or down when stopped
OUTAGE_LIMIT = 60.0  # the most: the clients must have seen the outage by then
MIN_503 = 3  # DB requests answered 503 inside the window before the outage may end
# A request that needs the database must have its answer within this long, whatever the database
# does: a few calls (token check, user, the work), each bounded by MONGODB_TIMEOUT_MS.
ANSWER_BOUND = 5 * TIMEOUT_MS / 1000
HEALTHZ_BOUND = 4.0  # well under the outage: a probe may wait for the worker, not for the database
RECOVERY_SECONDS = 60.0  # a bound on waiting, not a measure: the wait ends at the first success


@dataclasses.dataclass
class Observed:
    variant: str
    load: Load
    t_down: float = 0.0  # the database is confirmed away (threads stopped, or process reaped)
    t_back: float = 0.0  # the last moment it is known away: just before SIGCONT or the restart
    t_up: float = 0.0  # the restarted or resumed database is confirmed to answer
    workers_before: list[int] = dataclasses.field(default_factory=list)
    workers_after: list[int] = dataclasses.field(default_factory=list)
    recovered_after: float | None = None
    ready_at_end: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)
    log: str = ""

    def db_outcomes(self) -> list[Outcome]:
        return [o for o in self.load.snapshot() if o.kind != "healthz"]


@pytest.fixture(scope="module", params=["paused", "stopped", "restarted"])
def observed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Observed]:
    variant: str = request.param
    tmp = tmp_path_factory.mktemp(f"outage-{variant}")
    database = PinnedDatabase(tmp / "db")
    database.start()
    try:
        env = launcher_env(database, WEB_WORKERS="1")
        with Launcher(tmp / "var", env) as server:
            seen = _run(variant, database, server)
            seen.log = _problems_in(server.log())
            yield seen
    finally:
        database.stop()


def _run(variant: str, database: PinnedDatabase, server: Launcher) -> Observed:
    clients = [Client(server.port, f"user{i}") for i in range(USERS)]
    # The load's own bounds are only a safety net: the test stops it when it has seen enough.
    load = Load(clients, max_requests=100_000, max_seconds=300, request_timeout=40)
    seen = Observed(variant, load)
    seen.workers_before = server.workers()
    with load:
        wait_until(lambda: len(load.acknowledged) >= 10, 60, "the load to get going")
        if variant == "paused":
            database.pause()  # returns once every thread of the server is stopped
        elif variant == "stopped":
            database.stop()  # SIGTERM, then wait for it to exit
        else:
            database.kill()  # kill -9, and reap it
        seen.t_down = time.monotonic()
        if variant != "restarted":
            time.sleep(OUTAGE_SECONDS)  # a least duration; what is checked is timestamped
            wait_until(lambda: _outage_seen(seen), OUTAGE_LIMIT, "the clients to see the outage")
        seen.t_back = time.monotonic()
        if variant == "paused":
            database.resume()
            with contextlib.closing(database.client()) as client:
                client.admin.command("ping")
        else:
            database.start()  # returns once the server answers on its socket
        seen.t_up = time.monotonic()

        def recovered() -> bool:
            return any(
                o.kind == "upload" and o.status == 201 and o.started >= seen.t_up
                for o in load.snapshot()
            )

        wait_until(recovered, RECOVERY_SECONDS, "an upload to succeed after the outage")
        seen.recovered_after = time.monotonic() - seen.t_up
    seen.workers_after = server.workers()
    seen.ready_at_end = call(server.port, "GET", "/readyz", timeout=10).status
    seen.problems = check_acknowledged(load.acknowledged)
    return seen


def _inside(o: Outcome, seen: Observed, end: float) -> bool:
    """Whether a request started after the database was confirmed away and ended by ``end``."""
    return seen.t_down <= o.started and o.ended <= end


def _outage_seen(seen: Observed) -> bool:
    """While the database is still away: enough 503s and one /healthz answer, all begun after it
    went away."""
    now = time.monotonic()
    inside = [o for o in seen.load.snapshot() if _inside(o, seen, now)]
    answered_503 = sum(1 for o in inside if o.kind != "healthz" and o.status == 503)
    return answered_503 >= MIN_503 and any(o.kind == "healthz" for o in inside)


def _problems_in(log: str) -> str:
    """The server log's warnings, errors and tracebacks (request lines are JSON, one per line)."""
    keep = [
        line
        for line in log.splitlines()
        if not line.startswith("{") or '"level": "INFO"' not in line or '"status": 500' in line
    ]
    return "\n".join(keep)[-6000:]


def _describe(outcomes: list[Outcome], t0: float) -> str:
    return "\n".join(
        f"{o.kind} +{o.started - t0:.2f}s took {o.seconds:.2f}s: {o.status or o.error} "
        f"{o.body[:60]!r}"
        for o in outcomes[:20]
    )


def test_every_answer_is_a_success_or_a_clean_503(observed: Observed) -> None:
    bad = []
    for o in observed.db_outcomes():
        if o.status is None:
            # Only an upload whose body is already on its way may end at connection level.
            if o.kind != "upload":
                bad.append(o)
        elif o.status == 503:
            if not (has_retry_after(o.headers) and is_short_plain_message(o.headers, o.body)):
                bad.append(o)
        elif o.status not in (200, 201):
            bad.append(o)
    assert not bad, _describe(bad, observed.t_down) + "\n" + observed.log
    healthz = [o for o in observed.load.snapshot() if o.kind == "healthz"]
    assert healthz and all(o.status == 200 for o in healthz)


def test_requests_fail_fast_with_503_during_the_outage(observed: Observed) -> None:
    down, back = observed.t_down, observed.t_back
    slow, wrong, answered_503 = [], [], 0
    for o in observed.db_outcomes():
        # Whatever was in flight or started while the database was away is answered in time ...
        waited_from = max(o.started, down)
        affected = o.ended > down and waited_from < back - ANSWER_BOUND
        if affected and o.ended > waited_from + ANSWER_BOUND:
            slow.append(o)
        # ... and what was answered while it was away is a 503.
        if _inside(o, observed, back):
            if o.status == 503:
                answered_503 += 1
            elif not (o.status is None and o.kind == "upload"):
                wrong.append(o)
    assert not slow, f"answers slower than {ANSWER_BOUND} s:\n" + _describe(slow, down)
    assert not wrong, "not a 503 during the outage:\n" + _describe(wrong, down)
    if observed.variant != "restarted":  # that outage is too short to count on
        assert answered_503 >= MIN_503, f"only {answered_503} 503s answered during the outage"


def test_healthz_stays_fast_threads_do_not_pile_up(observed: Observed) -> None:
    healthz = [o for o in observed.load.snapshot() if o.kind == "healthz"]
    # Answered while the database was away: /healthz did not wait for it.
    during = [o for o in healthz if _inside(o, observed, observed.t_back)]
    if observed.variant != "restarted":  # that outage may fall between two probes
        assert during, "no /healthz probe answered during the outage"
        assert all(o.status == 200 for o in during), during
    slowest = max(o.seconds for o in healthz)
    assert slowest <= HEALTHZ_BOUND, f"/healthz took {slowest:.2f} s"


def test_service_recovers_by_itself(observed: Observed) -> None:
    assert observed.recovered_after is not None
    assert observed.workers_after == observed.workers_before, "the worker was restarted"
    assert observed.ready_at_end == 200


def test_acknowledged_uploads_download_and_decrypt(observed: Observed) -> None:
    assert len(observed.load.acknowledged) >= 10
    assert observed.problems == []
