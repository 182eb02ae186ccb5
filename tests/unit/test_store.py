"""The artifact store, local and S3 (an S3-protocol server on loopback: moto's server mode)."""

import os

import pytest

from iea.store import (
    ArtifactCorrupt,
    ArtifactNotFound,
    LocalStore,
    S3Store,
    check_key,
    get_json,
    open_store,
    put_json,
    sha256_bytes,
)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = "t-" + os.urandom(4).hex()
    return S3Store(
        endpoint, bucket, "testing", "testing", region="us-east-1", part_size=5 * 1024 * 1024
    )


def test_put_get_exists_list(store, tmp_path):
    assert store.list() == []
    store.put("a/b/one.txt", b"hello")
    put_json(store, "a/meta.json", {"n": 1})
    src = tmp_path / "f.bin"
    src.write_bytes(b"\x00\x01" * 10)
    store.put_file("c/f.bin", src)
    assert store.get("a/b/one.txt") == b"hello"
    assert get_json(store, "a/meta.json") == {"n": 1}
    assert store.exists("c/f.bin") and not store.exists("c/nope.bin")
    assert store.list() == ["a/b/one.txt", "a/meta.json", "c/f.bin"]
    assert store.list("a/") == ["a/b/one.txt", "a/meta.json"]
    dest = store.get_file("c/f.bin", tmp_path / "out" / "f.bin")
    assert dest.read_bytes() == src.read_bytes()
    store.put("a/b/one.txt", b"replaced")
    assert store.get("a/b/one.txt") == b"replaced"


def test_missing_key(store, tmp_path):
    with pytest.raises(ArtifactNotFound, match="no artifact 'x/missing.json'"):
        store.get("x/missing.json")
    with pytest.raises(ArtifactNotFound):
        store.get_file("x/missing.json", tmp_path / "m")


def test_large_multipart_object(store, tmp_path):
    data = os.urandom(12 * 1024 * 1024 + 123)  # three 5 MiB parts on S3
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    store.put_file("big/big.bin", src)
    store.put("big/big2.bin", data)
    assert store.get("big/big.bin") == data
    assert store.get("big/big2.bin") == data
    # the digest is of the content, whatever the upload's parts: not the S3 ETag
    assert store.sha256("big/big.bin") == store.sha256("big/big2.bin") == sha256_bytes(data)
    assert store.get_file("big/big.bin", tmp_path / "back.bin").read_bytes() == data


def _s3_client(store: S3Store):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=f"http://{store.endpoint}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def test_a_corrupt_object_is_refused_by_name_and_leaves_no_file(s3_endpoint, tmp_path):
    """An object whose bytes changed after it was written (same recorded SHA-256, other
    content: a bit flip, a truncated copy) fails every read, naming the key and both digests;
    ``get_file`` leaves the destination as it was."""
    store = S3Store(
        s3_endpoint, "t-" + os.urandom(4).hex(), "testing", "testing", region="us-east-1"
    )
    store.put("models/m/weights.bin", b"the weights")
    recorded = store.sha256("models/m/weights.bin")
    assert recorded == sha256_bytes(b"the weights")
    _s3_client(store).put_object(
        Bucket=store.bucket,
        Key="models/m/weights.bin",
        Body=b"the weighTs",
        Metadata={"sha256": recorded},
    )
    with pytest.raises(ArtifactCorrupt, match=r"'models/m/weights.bin'.*corrupt") as e:
        store.get("models/m/weights.bin")
    assert recorded in str(e.value) and sha256_bytes(b"the weighTs") in str(e.value)
    dest = tmp_path / "weights.bin"
    dest.write_bytes(b"old")
    with pytest.raises(ArtifactCorrupt):
        store.get_file("models/m/weights.bin", dest)
    assert dest.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["weights.bin"]
    # an object another tool wrote carries no digest: read as it is, sha256() says None
    _s3_client(store).put_object(Bucket=store.bucket, Key="raw/in.txt", Body=b"x")
    assert store.get("raw/in.txt") == b"x" and store.sha256("raw/in.txt") is None


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "a\\b", "./a"])
def test_bad_keys(key):
    with pytest.raises(ValueError, match="invalid artifact key"):
        check_key(key)


def test_open_store_from_settings(tmp_path, s3_endpoint):
    from iea.config import load_settings

    local = open_store(load_settings(overrides=[f"store.root={tmp_path}"], env={}).store)
    assert isinstance(local, LocalStore) and local.root == tmp_path
    s3 = open_store(
        load_settings(
            overrides=[
                "store.backend=s3",
                f"store.endpoint={s3_endpoint}",
                "store.bucket=cfg-bucket",
                "store.region=us-east-1",
            ],
            env={"IEA_STORE__ACCESS_KEY": "testing", "IEA_STORE__SECRET_KEY": "testing"},
        ).store
    )
    s3.put("k", b"v")
    assert s3.uri("k") == "s3://cfg-bucket/k" and s3.get("k") == b"v"


def test_a_folder_goes_to_the_store_and_comes_back_whole(store, tmp_path):
    from iea.store import get_tree, put_tree

    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "a.json").write_text("{}")
    (src / "sub" / "w.bin").write_bytes(os.urandom(1000))
    assert put_tree(store, "models/x/k1", src) == ["models/x/k1/a.json", "models/x/k1/sub/w.bin"]
    back = get_tree(store, "models/x/k1", tmp_path / "back" / "model")
    assert sorted(p.relative_to(back).as_posix() for p in back.rglob("*") if p.is_file()) == [
        "a.json",
        "sub/w.bin",
    ]
    assert (back / "sub" / "w.bin").read_bytes() == (src / "sub" / "w.bin").read_bytes()
    with pytest.raises(FileExistsError):
        get_tree(store, "models/x/k1", back)
    with pytest.raises(ArtifactNotFound):
        get_tree(store, "models/x/none", tmp_path / "none")
    assert not (tmp_path / "none").exists()
    assert [p.name for p in (tmp_path / "back").iterdir()] == ["model"]  # no staging left
