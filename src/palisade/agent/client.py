"""How the CLI reaches the agent: the socket from --socket / $PALISADE_SOCKET / the default, and starting an
agent in the background for commands that change state when none answers (what a user expects of
`palisade pod run` or `palisade apply` on a fresh machine). Read-only commands never start one."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from palisade.agent.config import AgentConfig
from palisade.agent.rpc import AgentClient
from palisade.errors import AgentError

DEFAULT_SOCKET = AgentConfig().socket_path


def socket_path(flag: str | None = None) -> str:
    return flag or os.environ.get("PALISADE_SOCKET") or DEFAULT_SOCKET


def connect(flag: str | None = None, *, autostart: bool = False, timeout: float = 120.0) -> AgentClient:
    path = socket_path(flag)
    client = AgentClient(path, timeout=timeout)
    if client.ping(timeout=2.0):
        return client
    if not autostart:
        client.close()
        raise AgentError(f"the agent is not running (no answer on {path}); start it with `palisade agent`")
    client.close()
    start_background(path)
    client = AgentClient(path, timeout=timeout)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if client.ping(timeout=1.0):
            return client
        time.sleep(0.2)
    raise AgentError(f"started an agent but it does not answer on {path}; see its log")


def start_background(path: str) -> int:
    """Start `palisade agent` detached (its own session; survives this CLI); returns its pid."""
    cfg = AgentConfig()
    log_dir = cfg.state_dir
    os.makedirs(log_dir, mode=0o700, exist_ok=True)
    log_path = os.path.join(log_dir, "agent.log")
    argv = [sys.executable, "-m", "palisade", "agent", "--socket-path", path]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True
        )
    print(f"palisade: started an agent (pid {proc.pid}, log {log_path})", file=sys.stderr)
    return proc.pid
