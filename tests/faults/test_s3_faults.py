"""S3 faults between the store and the server (a fault-injecting proxy, :mod:`s3proxy`, in front
of moto's server): an upload cut at 30%, ``503 SlowDown``, a reset connection, an answer cut
mid-body and a server that stops answering. Each either succeeds on a retry with its content
verified by SHA-256, or fails within a bounded time with an error naming the key; an upload that
failed never leaves a visible partial object."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from iea.store import S3Store, StoreUnavailable, sha256_bytes

sys.path.insert(0, str(Path(__file__).parent))
from s3proxy import FaultProxy  # noqa: E402

MiB = 1024 * 1024


@pytest.fixture
def proxy(s3_endpoint):
    p = FaultProxy(s3_endpoint)
    yield p
    p.close()


def _store(proxy: FaultProxy, **kw) -> S3Store:
    store = S3Store(
        proxy.endpoint,
        "f-" + os.urandom(4).hex(),
        "testing",
        "testing",
        region="us-east-1",
        part_size=5 * MiB,
        **kw,
    )
    store.put("ready", b"")  # the bucket exists before the faults start
    return store


def test_an_upload_cut_at_30_percent_is_sent_again_and_verified(proxy):
    store = _store(proxy)
    data = os.urandom(1 * MiB)
    proxy.inject("PUT", "/models/w.bin", "cut")
    store.put("models/w.bin", data)
    assert proxy.requests("PUT", "/models/w.bin") == ["cut", None]
    assert store.get("models/w.bin") == data
    assert store.sha256("models/w.bin") == sha256_bytes(data)


def test_an_upload_cut_for_good_leaves_no_visible_object(proxy, tmp_path):
    """A single-part upload and a part of a multipart upload, each cut on every try: the put
    fails naming the key after its retries, and no object (whole or partial) is listed."""
    store = _store(proxy, retries=2)
    proxy.inject("PUT", "/models/small.bin", "cut", times=99)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"S3 put of 'models/small.bin' .* after 2 retries"):
        store.put("models/small.bin", os.urandom(MiB))
    assert proxy.requests("PUT", "/models/small.bin") == ["cut"] * 3
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(11 * MiB))  # three parts of 5 MiB
    proxy.inject("PUT", "partNumber=2", "cut", times=99)
    with pytest.raises(StoreUnavailable, match="models/big.bin"):
        store.put_file("models/big.bin", big)
    assert time.monotonic() - t0 < 30
    assert not store.exists("models/small.bin") and not store.exists("models/big.bin")
    assert store.list("models/") == []


def test_slowdown_is_retried_a_bounded_number_of_times(proxy):
    store = _store(proxy, retries=3)
    proxy.inject("PUT", "/a.json", "slowdown", times=2)
    store.put("a.json", b"{}")
    assert proxy.requests("PUT", "/a.json") == ["slowdown", "slowdown", None]
    assert store.get("a.json") == b"{}"
    proxy.inject("GET", "/a.json", "slowdown", times=99)
    with pytest.raises(StoreUnavailable, match=r"S3 get of 'a.json' .* after 3 retries"):
        store.get("a.json")
    assert proxy.requests("GET", "/a.json") == [None] + ["slowdown"] * 4


def test_a_reset_connection_and_a_cut_answer_are_read_again(proxy, tmp_path):
    store = _store(proxy)
    data = os.urandom(2 * MiB)
    store.put("d/x.bin", data)
    proxy.inject("GET", "/d/x.bin", "reset")
    assert store.get("d/x.bin") == data
    proxy.inject("GET", "/d/x.bin", "cut_response", times=2)
    assert store.get_file("d/x.bin", tmp_path / "x.bin").read_bytes() == data
    assert proxy.requests("GET", "/d/x.bin") == [
        "reset",
        None,
        "cut_response",
        "cut_response",
        None,
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]  # no partial temp file left


def test_a_server_that_stops_answering_fails_in_bounded_time(proxy, tmp_path):
    store = _store(proxy, timeout=1.0, retries=1)
    store.put("s.bin", b"abc")
    proxy.inject("GET", "/s.bin", "stall", times=99)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable, match="'s.bin'"):
        store.get_file("s.bin", tmp_path / "s.bin")
    assert time.monotonic() - t0 < 10
    assert not (tmp_path / "s.bin").exists() and list(tmp_path.iterdir()) == []
