"""A loopback HTTP proxy in front of an S3 server that injects faults into chosen requests.

Each request is parsed (head, then a body of ``Content-Length`` bytes) and checked against the
plan, a list of ``(method, path substring, fault, times)``; the first entry that matches and
has times left is used. Faults:

* ``reset``: the connection is reset (RST) before any answer;
* ``cut``: 30% of the request body reaches the server, then both connections are reset (an
  upload cut in transit);
* ``slowdown``: the proxy answers S3's ``503 SlowDown`` itself;
* ``cut_response``: the server's answer is relayed up to 30% of its body, then reset;
* ``stall``: nothing is answered until the client gives up.

Every request is recorded as ``(method, path, fault or None)`` in :attr:`FaultProxy.seen`.
"""

from __future__ import annotations

import socket
import struct
import threading

SLOWDOWN = (
    b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
    b"<Message>Please reduce your request rate.</Message></Error>"
)


def _reset(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass


def _read_head(sock: socket.socket, buf: bytearray) -> bytes | None:
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    del buf[:end]
    return head


def _read_n(sock: socket.socket, buf: bytearray, n: int) -> bytes:
    while len(buf) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("peer closed mid-body")
        buf += chunk
    out = bytes(buf[:n])
    del buf[:n]
    return out


def _headers(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines if x)}


def _read_chunked(sock: socket.socket, buf: bytearray) -> bytes:
    out = bytearray()
    while True:
        while b"\r\n" not in buf:
            buf += sock.recv(65536)
        line_end = buf.index(b"\r\n") + 2
        size = int(bytes(buf[: line_end - 2]).split(b";")[0], 16)
        out += buf[:line_end]
        del buf[:line_end]
        out += _read_n(sock, buf, size + 2)
        if size == 0:
            return bytes(out)


class FaultProxy:
    def __init__(self, upstream: str):
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.plan: list[list] = []
        self.seen: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(32)
        self.endpoint = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def inject(self, method: str, path: str, fault: str, times: int = 1) -> None:
        """The next ``times`` requests of ``method`` whose path holds ``path`` get ``fault``."""
        with self._lock:
            self.plan.append([method, path, fault, times])

    def requests(self, method: str, path: str) -> list[str | None]:
        """The faults (None: passed through) of every request seen that matches."""
        return [f for m, p, f in self.seen if m == method and path in p]

    def close(self) -> None:
        self._stop.set()
        self._sock.close()

    def _fault(self, method: str, path: str) -> str | None:
        with self._lock:
            for entry in self.plan:
                if entry[0] == method and entry[1] in path and entry[3] > 0:
                    entry[3] -= 1
                    fault = entry[2]
                    break
            else:
                fault = None
            self.seen.append((method, path, fault))
            return fault

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        up: socket.socket | None = None
        cbuf, ubuf = bytearray(), bytearray()
        try:
            while True:
                head = _read_head(client, cbuf)
                if head is None:
                    return
                method, path = head.split(b" ", 2)[:2]
                method, path = method.decode(), path.decode()
                hdrs = _headers(head)
                if hdrs.get("transfer-encoding", "").lower() == "chunked":
                    body = _read_chunked(client, cbuf)
                else:
                    body = _read_n(client, cbuf, int(hdrs.get("content-length", 0)))
                fault = self._fault(method, path)
                if fault == "reset":
                    _reset(client)
                    return
                if fault == "slowdown":
                    client.sendall(
                        b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                        + f"Content-Length: {len(SLOWDOWN)}\r\n".encode()
                        + b"Connection: close\r\n\r\n"
                        + SLOWDOWN
                    )
                    client.close()
                    return
                if fault == "stall":
                    client.settimeout(30)
                    try:
                        while client.recv(65536):
                            pass
                    except OSError:
                        pass
                    return
                if up is None:
                    up = socket.create_connection(self.upstream)
                if fault == "cut":
                    up.sendall(head + body[: int(len(body) * 0.3)])
                    _reset(up)
                    _reset(client)
                    return
                up.sendall(head + body)
                rhead = _read_head(up, ubuf)
                if rhead is None:
                    _reset(client)
                    return
                rh = _headers(rhead)
                status = int(rhead.split(b" ", 2)[1])
                if method == "HEAD" or status in (204, 304):
                    rbody = b""
                elif rh.get("transfer-encoding", "").lower() == "chunked":
                    rbody = _read_chunked(up, ubuf)
                else:
                    rbody = _read_n(up, ubuf, int(rh.get("content-length", 0)))
                if fault == "cut_response":
                    client.sendall(rhead + rbody[: int(len(rbody) * 0.3)])
                    _reset(client)
                    return
                client.sendall(rhead + rbody)
        except OSError:
            _reset(client)
        finally:
            if up is not None:
                up.close()
