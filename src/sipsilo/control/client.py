"""The CLI's end of the control channel."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from sipsilo.config import Config


class ControlError(Exception):
    pass


def request(config: Config, message: dict[str, Any], timeout: float = 5.0) -> Any:
    return ask(config.control_socket_path(), message, timeout)


def ask(path: str | os.PathLike[str], message: dict[str, Any], timeout: float = 5.0) -> Any:
    """One command on the control socket at *path* (a worker's own: `<socket>.<n>`)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))  # OSError here: the server is not running
        sock.sendall(json.dumps(message).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    reply = json.loads(data or b"{}")
    if "error" in reply:
        raise ControlError(reply["error"])
    return reply.get("result")
