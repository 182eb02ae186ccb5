"""Artifact store: put/get/exists/list of byte objects by key, on a local directory or S3/MinIO.

Keys are ``/``-separated relative paths (``datasets/twitter/<version>/train.jsonl``); ``..``,
empty segments and leading ``/`` are refused. A missing key raises :class:`ArtifactNotFound`.

Integrity: every object written to S3 carries the SHA-256 of its content (hex) as user
metadata ``sha256`` (an S3 ETag is the MD5 of the content only for single-part uploads), and
every read checks the bytes against it, raising :class:`ArtifactCorrupt` naming the key.
:meth:`ArtifactStore.sha256` returns the recorded digest (S3) or the file's (local).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

MULTIPART_PART_SIZE = 16 * 1024 * 1024
"""Objects larger than this go to S3 in parts of this size (bytes, >= 5 MiB)."""


class ArtifactNotFound(KeyError):
    """The key does not exist in the store."""

    def __init__(self, key: str, where: str):
        self.key = key
        super().__init__(f"no artifact {key!r} in {where}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class ArtifactCorrupt(IOError):
    """The object's content does not match the SHA-256 recorded when it was written."""

    def __init__(self, key: str, where: str, recorded: str, actual: str):
        self.key = key
        super().__init__(
            f"artifact {key!r} in {where} is corrupt: its content has SHA-256 {actual}, "
            f"{recorded} was recorded when it was written"
        )


class StoreUnavailable(IOError):
    """An S3 request still failed in transit after the store's retries."""

    def __init__(self, op: str, key: str, where: str, retries: int, error: Exception):
        self.key = key
        super().__init__(
            f"S3 {op} of {key!r} at {where} failed after {retries} retries: "
            f"{type(error).__name__}: {error}"
        )


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's content, read in ``chunk``-byte pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class ArtifactStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def put_file(self, key: str, path: Path) -> None: ...
    def get(self, key: str) -> bytes: ...
    def get_file(self, key: str, dest: Path) -> Path: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def uri(self, key: str) -> str: ...
    def sha256(self, key: str) -> str | None: ...


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key, else raise ValueError naming it."""
    path = PurePosixPath(key)
    if (
        not key
        or key.startswith("/")
        or "\\" in key
        or any(p in ("", ".", "..") for p in key.split("/"))
    ):
        raise ValueError(f"invalid artifact key {key!r}: use a relative 'a/b/c' path without '..'")
    return str(path)


def put_json(store: ArtifactStore, key: str, obj: Any) -> None:
    store.put(key, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def get_json(store: ArtifactStore, key: str) -> Any:
    return json.loads(store.get(key).decode("utf-8"))


def put_tree(store: ArtifactStore, prefix: str, folder: str | Path) -> list[str]:
    """Put every file under ``folder`` as ``prefix/<its relative path>`` (sorted, so a rerun
    writes in the same order); returns the keys written."""
    folder = Path(folder)
    keys = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        key = f"{prefix}/{path.relative_to(folder).as_posix()}"
        store.put_file(key, path)
        keys.append(key)
    return keys


def get_tree(store: ArtifactStore, prefix: str, dest: str | Path) -> Path:
    """Download every object under ``prefix/`` into the new folder ``dest`` (each file's
    SHA-256 checked by the store): written into a sibling staging folder and renamed whole, so
    ``dest`` is complete or absent. Raises :class:`ArtifactNotFound` when nothing is there and
    FileExistsError when ``dest`` exists."""
    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} exists: get_tree writes only new folders")
    keys = store.list(prefix.rstrip("/") + "/")
    if not keys:
        raise ArtifactNotFound(prefix + "/", "the store")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        for key in keys:
            store.get_file(key, staging / key[len(prefix.rstrip("/")) + 1 :])
        os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


class LocalStore:
    """Artifacts as files under ``root``; writes are atomic (temp file + rename)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)

    def put_file(self, key: str, path: Path) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        os.close(fd)
        shutil.copyfile(path, tmp)
        os.replace(tmp, dest)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        if not path.is_file():
            raise ArtifactNotFound(key, str(self.root))
        return path.read_bytes()

    def get_file(self, key: str, dest: Path) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise ArtifactNotFound(key, str(self.root))
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)
        return Path(dest)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        keys = (
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        )
        return sorted(k for k in keys if k.startswith(prefix))

    def uri(self, key: str) -> str:
        return self._path(key).resolve().as_uri()

    def sha256(self, key: str) -> str:
        """The SHA-256 of the file's content (a local file carries no recorded digest)."""
        path = self._path(key)
        if not path.is_file():
            raise ArtifactNotFound(key, str(self.root))
        return sha256_file(path)


def _rewinding(fh):
    """A sink for :meth:`S3Store._read` writing into ``fh``; ``None`` empties it (a new try)."""

    def sink(block: bytes | None) -> None:
        if block is None:
            fh.seek(0)
            fh.truncate()
        else:
            fh.write(block)

    return sink


class S3Store:
    """Artifacts as objects in an S3/MinIO bucket (created on first use)."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        secure: bool = False,
        region: str | None = None,
        part_size: int = MULTIPART_PART_SIZE,
        timeout: float = 60.0,
        retries: int = 5,
    ):
        """``timeout``: seconds to connect, and between bytes of a response; ``retries``: how
        often a request that failed in transit (reset, cut, timeout, HTTP 500/502/503/504, S3's
        ``503 SlowDown``) is sent again, with exponential backoff from 0.2 s, before the
        error is raised. A read whose body is cut is read again as often."""
        import urllib3  # local imports: only S3 users pay for them
        from minio import Minio

        self.bucket = bucket
        self.endpoint = endpoint
        self.part_size = part_size
        self.retries = retries
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            maxsize=10,
            retries=urllib3.Retry(
                total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
            ),
        )
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http,
        )
        self._bucket_ready = False

    @contextlib.contextmanager
    def _transport(self, op: str, key: str):
        """Raise a request that failed in transit after the retries as
        :class:`StoreUnavailable`, naming the operation, the key and the endpoint."""
        from urllib3.exceptions import HTTPError

        try:
            yield
        except HTTPError as e:
            raise StoreUnavailable(op, key, self.endpoint, self.retries, e) from e

    def _ensure_bucket(self) -> None:
        if not self._bucket_ready:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
            self._bucket_ready = True

    def put(self, key: str, data: bytes) -> None:
        with self._transport("put", key):
            self._ensure_bucket()
            self.client.put_object(
                self.bucket,
                check_key(key),
                io.BytesIO(data),
                len(data),
                part_size=self.part_size,
                metadata={"sha256": sha256_bytes(data)},
            )

    def put_file(self, key: str, path: Path) -> None:
        with self._transport("put", key):
            self._ensure_bucket()
            self.client.fput_object(
                self.bucket,
                check_key(key),
                str(path),
                part_size=self.part_size,
                metadata={"sha256": sha256_file(path)},
            )

    def _open(self, key: str):
        from minio.error import S3Error

        try:
            return self.client.get_object(self.bucket, check_key(key))
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchBucket"):
                raise ArtifactNotFound(key, self.uri("")) from e
            raise

    def _check(self, key: str, recorded: str | None, actual: str) -> None:
        if recorded is not None and recorded != actual:
            raise ArtifactCorrupt(key, self.uri(""), recorded, actual)

    def _read(self, key: str, sink) -> None:
        """Stream the object into ``sink(block)`` (``sink(None)`` starts over), reading it
        again when its body is cut in transit, and check the content against the SHA-256
        recorded when it was written."""
        from urllib3.exceptions import HTTPError

        for attempt in range(self.retries + 1):
            with self._transport("get", key):
                resp = self._open(key)
            h = hashlib.sha256()
            try:
                sink(None)
                for block in resp.stream(1 << 20):
                    h.update(block)
                    sink(block)
                recorded = resp.headers.get("x-amz-meta-sha256")
            except HTTPError as e:  # cut, reset or timed out mid-body
                if attempt == self.retries:
                    raise StoreUnavailable("get", key, self.endpoint, self.retries, e) from e
                time.sleep(0.2 * 2**attempt)
                continue
            finally:
                resp.close()
                resp.release_conn()
            break
        self._check(key, recorded, h.hexdigest())

    def get(self, key: str) -> bytes:
        buf = io.BytesIO()
        self._read(key, _rewinding(buf))
        return buf.getvalue()

    def get_file(self, key: str, dest: Path) -> Path:
        """Stream the object to ``dest`` (atomically: a temp file renamed once its SHA-256
        matched); a corrupt object leaves ``dest`` untouched."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                self._read(key, _rewinding(fh))
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return dest

    def sha256(self, key: str) -> str | None:
        """The SHA-256 recorded when the object was written (None: written by another tool)."""
        from minio.error import S3Error

        try:
            with self._transport("stat", key):
                stat = self.client.stat_object(self.bucket, check_key(key))
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject", "NotFound"):
                raise ArtifactNotFound(key, self.uri("")) from e
            raise
        return (stat.metadata or {}).get("x-amz-meta-sha256")

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        try:
            with self._transport("stat", key):
                self.client.stat_object(self.bucket, check_key(key))
            return True
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject", "NotFound"):
                return False
            raise

    def list(self, prefix: str = "") -> list[str]:
        with self._transport("list", prefix + "*"):
            if not self.client.bucket_exists(self.bucket):
                return []
            return sorted(
                o.object_name
                for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
            )

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def open_store(settings) -> ArtifactStore:
    """The store that :class:`iea.config.StoreSettings` describes."""
    if settings.backend == "local":
        return LocalStore(settings.root)
    return S3Store(
        settings.endpoint,
        settings.bucket,
        settings.access_key.get_secret_value() if settings.access_key else None,
        settings.secret_key.get_secret_value() if settings.secret_key else None,
        secure=settings.secure,
        region=settings.region,
        timeout=settings.timeout_s,
        retries=settings.retries,
    )
