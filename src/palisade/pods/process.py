"""Running programs inside a pod: background spawn, run-and-wait, and exec of the calling process.

Background and run-and-wait children enter the pod through a small trampoline (see ``trampoline``): /bin/sh
writes its pid into the pod's cgroup.procs, nsenter joins the pod's netns, then the program is exec'd. So the
program's first instruction already runs in the pod (its cgroup id is the pod's from the start, which the
datapath and runtime-security programs rely on), and no Python runs between fork and exec in the (threaded)
agent. ``exec_in`` enters the calling process itself (setns + cgroup write) and execs, for `pod exec`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import NoReturn

from palisade.pods.enter import enter
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


def trampoline(netns_path: str | None, cgroup_path: str, args: Sequence[str]) -> list[str]:
    """The argv that enters the pod and then becomes ``args``, with no Python between fork and exec.

    The agent is multi-threaded (gRPC): running Python in a forked child (``preexec_fn``) can deadlock or die
    on a lock another thread held at fork time. Instead the child execs /bin/sh, which writes its own pid to
    the pod's cgroup.procs and execs nsenter (same pid, already in the cgroup), which joins the pod's network
    namespace with setns(2) (no /sys remount, unlike `ip netns exec`) and execs the command: no instruction of
    the command runs outside the pod.
    """
    procs = os.path.join(cgroup_path, "cgroup.procs")
    if not os.path.exists(procs):
        raise PodError(f"cgroup {cgroup_path} does not exist", field="cgroup_path")
    if netns_path is not None and not os.path.exists(netns_path):
        raise PodError(f"network namespace {netns_path} does not exist", field="netns_path")
    enter = ["nsenter", f"--net={netns_path}", "--"] if netns_path is not None else []
    return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', procs, *enter, *args]


def _resolve(args: list[str], env: Mapping[str, str] | None, cwd: str | None) -> list[str]:
    """argv[0] resolved now (the pod shares the host's filesystem), so a missing program is a clear error here
    rather than an exit code 127 from inside the trampoline."""
    prog = args[0]
    if "/" in prog:
        path = prog if os.path.isabs(prog) or cwd is None else os.path.join(cwd, prog)
        if not os.path.isfile(path):
            raise PodError(f"cannot run {prog!r}: No such file or directory", field="argv")
        if not os.access(path, os.X_OK):
            raise PodError(f"cannot run {prog!r}: Permission denied", field="argv")
        return args
    search = (env or os.environ).get("PATH", os.defpath)
    found = shutil.which(prog, path=search)
    if found is None:
        raise PodError(f"cannot run {prog!r}: No such file or directory", field="argv")
    return [found, *args[1:]]


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
    log_dir = os.path.dirname(os.path.abspath(log_path))
    os.makedirs(log_dir, exist_ok=True)
    with open(log_path, "ab", buffering=0) as log:
        try:
            return subprocess.Popen(
                trampoline(netns_path, cgroup_path, _resolve(args, env, cwd)),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                close_fds=True,
                start_new_session=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise _popen_errors(exc, args, where) from None


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
    try:
        return subprocess.run(
            trampoline(netns_path, cgroup_path, _resolve(args, env, cwd)),
            input=input,
            stdin=subprocess.DEVNULL if input is None and capture_output else None,
            capture_output=capture_output,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            check=check,
            close_fds=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        if isinstance(exc, subprocess.TimeoutExpired | subprocess.CalledProcessError):
            raise
        raise _popen_errors(exc, args, where) from None


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
