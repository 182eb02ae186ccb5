"""Artifact store: put/get/exists/list of byte objects by key, on a local directory or S3/MinIO.

Keys are ``/``-separated relative paths (``datasets/twitter/<version>/train.jsonl``); ``..``,
empty segments and leading ``/`` are refused. A missing key raises :class:`ArtifactNotFound`.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
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


class ArtifactStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...
    def put_file(self, key: str, path: Path) -> None: ...
    def get(self, key: str) -> bytes: ...
    def get_file(self, key: str, dest: Path) -> Path: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str = "") -> list[str]: ...
    def uri(self, key: str) -> str: ...


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
    ):
        from minio import Minio  # local import: only S3 users pay for it

        self.bucket = bucket
        self.endpoint = endpoint
        self.part_size = part_size
        self.client = Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region
        )
        self._bucket_ready = False

    def _ensure_bucket(self) -> None:
        if not self._bucket_ready:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
            self._bucket_ready = True

    def put(self, key: str, data: bytes) -> None:
        self._ensure_bucket()
        self.client.put_object(
            self.bucket, check_key(key), io.BytesIO(data), len(data), part_size=self.part_size
        )

    def put_file(self, key: str, path: Path) -> None:
        self._ensure_bucket()
        self.client.fput_object(self.bucket, check_key(key), str(path), part_size=self.part_size)

    def get(self, key: str) -> bytes:
        from minio.error import S3Error

        try:
            resp = self.client.get_object(self.bucket, check_key(key))
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchBucket"):
                raise ArtifactNotFound(key, self.uri("")) from e
            raise
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()

    def get_file(self, key: str, dest: Path) -> Path:
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        Path(dest).write_bytes(self.get(key))
        return Path(dest)

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        try:
            self.client.stat_object(self.bucket, check_key(key))
            return True
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject", "NotFound"):
                return False
            raise

    def list(self, prefix: str = "") -> list[str]:
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
    )
