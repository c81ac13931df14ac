"""Running programs inside a pod: background spawn, run-and-wait, and exec of the calling process.

The pod is entered between fork and exec (see ``palisade.pods.enter.preexec``): the child writes itself into
the pod's cgroup.procs and joins the pod's netns, then execs. So the program's first instruction already runs
in the pod (its cgroup id is the pod's from the start, which the datapath and runtime-security programs rely
on).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import NoReturn

from palisade.pods.enter import enter, preexec
from palisade.pods.model import PodError


def _check_argv(argv: Sequence[str]) -> list[str]:
    if isinstance(argv, str | bytes) or not argv or not all(isinstance(a, str) for a in argv):
        raise PodError("must be a non-empty list of strings", field="argv")
    return list(argv)


def _popen_errors(exc: OSError | subprocess.SubprocessError, argv: Sequence[str], where: str) -> PodError:
    """The PodError for a failed start: the child could not enter the pod, or could not exec argv."""
    if isinstance(exc, subprocess.SubprocessError):
        return PodError(f"could not enter {where} before running {argv[0]!r}: {exc}")
    return PodError(f"cannot run {argv[0]!r}: {exc.strerror or exc}", field="argv")


def spawn(
    netns_path: str | None,
    cgroup_path: str,
    argv: Sequence[str],
    log_path: str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    where: str = "the pod",
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in the pod, in the background, in a session of its own.

    stdin is /dev/null; stdout and stderr are appended to ``log_path`` (its directory is created). The
    process does not depend on the caller: it has no controlling terminal and no pipe to the caller, so it
    keeps running when the caller exits (it is then re-parented to init). ``env`` replaces the caller's
    environment when given; ``netns_path`` None keeps the host's network (hostNetwork pods).
    """
    args = _check_argv(argv)
    child, close = preexec(netns_path, cgroup_path)
    try:
        log_dir = os.path.dirname(os.path.abspath(log_path))
        os.makedirs(log_dir, exist_ok=True)
        with open(log_path, "ab", buffering=0) as log:
            try:
                return subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=dict(env) if env is not None else None,
                    cwd=cwd,
                    close_fds=True,
                    start_new_session=True,
                    preexec_fn=child,  # deliberate: see palisade.pods.enter.preexec
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise _popen_errors(exc, args, where) from None
    finally:
        close()


def run(
    netns_path: str | None,
    cgroup_path: str,
    argv: Sequence[str],
    *,
    timeout: float | None = None,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    capture_output: bool = True,
    check: bool = False,
    where: str = "the pod",
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` in the pod and wait for it, like subprocess.run (TimeoutExpired and CalledProcessError
    as there). With ``capture_output`` False the child shares the caller's stdin/stdout/stderr."""
    args = _check_argv(argv)
    child, close = preexec(netns_path, cgroup_path)
    try:
        return subprocess.run(
            args,
            input=input,
            stdin=subprocess.DEVNULL if input is None and capture_output else None,
            capture_output=capture_output,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            check=check,
            close_fds=True,
            preexec_fn=child,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        if isinstance(exc, subprocess.TimeoutExpired | subprocess.CalledProcessError):
            raise
        raise _popen_errors(exc, args, where) from None
    finally:
        close()


def exec_in(
    netns_path: str | None,
    cgroup_path: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> NoReturn:
    """Replace the calling process with ``argv`` running in the pod. Does not return on success.

    The caller's stdin/stdout/stderr and controlling terminal carry over unchanged, so interactive shells
    work. The executable is looked up (PATH of ``env``) before entering, so a typo fails without side
    effects; a failure after entering leaves the caller in the pod (it should exit).
    """
    args = _check_argv(argv)
    environ = dict(env) if env is not None else dict(os.environ)
    path = args[0] if "/" in args[0] else shutil.which(args[0], path=environ.get("PATH", os.defpath))
    if path is None or not os.access(path, os.X_OK):
        raise PodError(f"{args[0]!r}: command not found or not executable", field="argv")
    if cwd is not None and not os.path.isdir(cwd):
        raise PodError(f"{cwd!r} is not a directory", field="cwd")
    enter(netns_path, cgroup_path)
    if cwd is not None:
        os.chdir(cwd)
    os.execve(path, args, environ)
