"""The quota's running total (``storage.usage``): exact under concurrent uploads and deletes of one
user, read in one query whatever the user stores, repaired by the sweep when it drifts.

Service level, on the real database (FerretDB loses concurrent ``$inc``: the total is a chain of
versions whose unique ``_id`` serialises the changes; see ``cryptofiles/storage/usage.py``).
"""

from __future__ import annotations

import os
import random
import threading
from typing import Any

import pytest
from flask import Flask

from cryptofiles.clock import utcnow
from cryptofiles.files import FileService, QuotaExceeded
from cryptofiles.storage import FileRecord, Storage
from cryptofiles.web import services_of

WRITERS = 50


@pytest.fixture
def storage(app: Flask) -> Storage:
    return services_of(app).storage


@pytest.fixture
def files(app: Flask) -> FileService:
    return services_of(app).files


@pytest.fixture
def owner(storage: Storage) -> str:
    return storage.users.create("usage-owner", "-", utcnow()).public_id


def stored(storage: Storage, owner: str) -> int:
    """What the total must be: the plaintext bytes of the owner's complete files."""
    return storage.files.bytes_used(owner)


def test_total_exact_under_concurrent_uploads_and_deletes(
    storage: Storage, files: FileService, owner: str
) -> None:
    existing = [files.upload(owner, [os.urandom(100 + i)]) for i in range(WRITERS // 2)]
    assert storage.usage.head(owner).bytes == stored(storage, owner) > 0
    barrier = threading.Barrier(WRITERS)
    errors: list[BaseException] = []
    uploaded: list[FileRecord] = []

    def upload(i: int) -> None:
        barrier.wait()
        uploaded.append(files.upload(owner, [os.urandom(random.randint(1, 5000) + i)]))

    def delete(record: FileRecord) -> None:
        barrier.wait()
        files.delete(record)

    def guarded(work: Any, arg: Any) -> None:
        try:
            work(arg)
        except BaseException as exc:  # reported below, with the totals
            errors.append(exc)

    jobs = [(upload, i) for i in range(WRITERS - len(existing))] + [(delete, r) for r in existing]
    threads = [threading.Thread(target=guarded, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    expected = sum(record.size for record in uploaded)
    assert stored(storage, owner) == expected
    assert storage.usage.head(owner).bytes == expected


def test_quota_reads_the_total_not_the_files(
    app: Flask, make_app: Any, storage: Storage, owner: str
) -> None:
    files = services_of(make_app(QUOTA_BYTES="10000")).files
    files.upload(owner, [os.urandom(4000)])
    head = storage.usage.head(owner)
    assert head.bytes == 4000
    # By hand, the total says the quota is nearly used: the next upload believes it.
    assert storage.usage.set_total(head, 9999, utcnow())
    with pytest.raises(QuotaExceeded, match="1 bytes left"):
        files.upload(owner, [os.urandom(2)])
    assert stored(storage, owner) == 4000


def test_sweep_repairs_a_drifted_total(storage: Storage, files: FileService, owner: str) -> None:
    files.upload(owner, [os.urandom(3000)])
    kept = files.upload(owner, [os.urandom(700)])
    files.delete(files.upload(owner, [os.urandom(50)]))
    assert storage.usage.set_total(storage.usage.head(owner), 123456, utcnow())  # corrupted
    report = files.sweep(usage=True)
    assert [(r.owner, r.recorded, r.stored) for r in report.usage] == [(owner, 123456, 3700)]
    assert storage.usage.head(owner).bytes == 3700
    assert files.sweep(usage=True).usage == ()  # nothing left to repair
    files.delete(kept)
    assert storage.usage.head(owner).bytes == 3000 == stored(storage, owner)


def test_sweep_forgets_totals_of_users_gone(storage: Storage, files: FileService) -> None:
    gone = storage.users.create("usage-gone", "-", utcnow()).public_id
    files.upload(gone, [os.urandom(10)])
    storage.users.delete(gone)  # by hand: no account deletion ran
    files.sweep(usage=True)
    assert storage.usage.head(gone).v == 0
    assert storage.usage.owners() == set()


def test_a_lost_race_retries_and_counts_once(storage: Storage, owner: str) -> None:
    head = storage.usage.head(owner)
    storage.usage.add(owner, 5, utcnow(), head)
    # The same (now stale) head again: its version is taken, so the change reads the head again.
    storage.usage.add(owner, 7, utcnow(), head)
    assert storage.usage.head(owner).bytes == 12
    assert storage.usage.head(owner).v == 2


def test_account_deletion_forgets_the_total(app: Flask, storage: Storage) -> None:
    from tests.support.api import PASSWORD, Accounts

    client = app.test_client()
    accounts = Accounts(client)
    token = accounts.token("usage-leaver")
    user = storage.users.by_name("usage-leaver")
    assert user is not None
    assert (
        client.post("/upload", data=b"x" * 10, headers=accounts.headers(token)).status_code == 201
    )
    assert storage.usage.head(user.public_id).bytes == 10
    response = client.delete(
        "/account", headers={**accounts.headers(token), "User_Password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    assert storage.usage.owners() == set()


def test_old_versions_retire_and_a_stale_head_still_counts(storage: Storage, owner: str) -> None:
    from cryptofiles.storage.usage import RETIRE_EVERY

    stale = storage.usage.head(owner)  # version 0, still "fresh" by the clock
    for _ in range(3 * RETIRE_EVERY):
        storage.usage.add(owner, 1, utcnow())
    live = storage.usage.collection.count_documents({"owner": owner})
    assert live <= 2 * RETIRE_EVERY + 1  # the head query reads only these
    assert storage.usage.collection.count_documents({"retired": owner}) >= RETIRE_EVERY
    # A writer whose head is older than the retired versions: their _id still refuses its
    # insert, so it reads the head again instead of writing below it.
    storage.usage.add(owner, 100, utcnow(), stale)
    assert storage.usage.head(owner).bytes == 3 * RETIRE_EVERY + 100
    storage.usage.remove(owner)
    assert storage.usage.collection.count_documents({}) == 0
