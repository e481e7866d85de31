"""A real uvicorn server on a free 127.0.0.1 port, in a background thread (shared by the server and client tests)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def live_server(app, timeout: float = 30.0, receive_buffer: int | None = None, **config) -> Iterator[str]:
    """Serve the ASGI `app` until the block ends; yields its base URL (http://127.0.0.1:PORT). `receive_buffer`: the
    kernel's receive buffer of each connection (SO_RCVBUF), small to make a client that sends a large body block on the
    server as it would over a real network; `config`: more uvicorn.Config options (`http="h11"`, ...)."""
    import uvicorn

    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)  # accepted connections inherit it
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    thread = threading.Thread(target=server.run, args=([sock],), daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            sock.close()
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        if thread.is_alive():
            raise RuntimeError("the server did not stop")
