"""Processes the benchmark starts: pinned with taskset, measured from /proc, always stopped.

Every process is started in its own session (so a Ctrl-C in the terminal reaches only the
benchmark, which then stops them in order) and with a parent-death signal, so none outlives
the benchmark even if it is killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
PR_SET_PDEATHSIG = 1


class StartError(RuntimeError):
    """A process did not come up; the message says why and where its log is."""


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


_RUNNING: list[Proc] = []
NICE = 0
"""Niceness for everything started (contenders, nginx, wrk); --nice sets it (negative: priority)."""


def prefix(cpus: str | None) -> list[str]:
    """The command prefix pinning to ``cpus`` (taskset) at the chosen niceness (nice)."""
    out: list[str] = []
    if NICE:
        out += ["nice", "-n", str(NICE)]
    if cpus is not None:
        taskset = shutil.which("taskset")
        if taskset is None:
            raise StartError("taskset is missing (Debian package util-linux)")
        out += [taskset, "-c", cpus]
    return out


def die_with_parent() -> None:
    """Run in the child before exec: the kernel SIGKILLs it when the benchmark dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def start(
    name: str,
    argv: Sequence[str],
    cpus: str | None,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Proc:
    """Start ``argv`` pinned to ``cpus`` (a taskset list such as "0" or "0,1"); output to a file."""
    full = [*prefix(cpus), *argv]
    log = log_path.open("wb")
    try:
        popen = subprocess.Popen(
            full,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    except OSError as exc:
        raise StartError(f"{name}: cannot start {full[0]}: {exc}") from exc
    finally:
        log.close()
    proc = Proc(name, popen, log_path, full)
    _RUNNING.append(proc)
    return proc


def stop(proc: Proc, timeout_s: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``timeout_s``."""
    if proc in _RUNNING:
        _RUNNING.remove(proc)
    pids = tree_pids(proc.pid) if proc.alive() else []
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        if proc.popen.poll() is not None and not any(_exists(p) for p in pids):
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        for pid in pids:  # children that left the group (none of ours do, but be sure)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None and not any(_exists(p) for p in pids):
                break
            time.sleep(0.05)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.popen.wait(timeout=1)
    if proc.popen.returncode == -signal.SIGKILL:
        print(f"  ({proc.name} did not stop on SIGTERM within {timeout_s:.0f} s: killed)", flush=True)


def stop_all() -> None:
    """Stop every process still running that this module started, newest first."""
    for proc in reversed(list(_RUNNING)):
        stop(proc)


def _exists(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which may hold spaces and parentheses.
    return text.rsplit(")", 1)[1].split()


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    out: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        if _stat_fields(pid) is None:
            continue
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) of the process tree, including reaped children."""
    ticks = 0
    for pid in tree_pids(root):
        fields = _stat_fields(pid)
        if fields is None:
            continue
        # After the name: state=0 ppid=1 ... utime=11 stime=12 cutime=13 cstime=14
        ticks += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def settle(root: int, max_s: float = 15.0, idle_share: float = 0.05, window_s: float = 0.25) -> float:
    """Wait until the tree uses under ``idle_share`` of a core over ``window_s`` (the work queued by
    the previous load is done); at most ``max_s``. Returns the seconds waited."""
    t0 = time.monotonic()
    last = tree_cpu_s(root)
    while time.monotonic() - t0 < max_s:
        time.sleep(window_s)
        now = tree_cpu_s(root)
        if now - last <= idle_share * window_s + 1.0 / CLK_TCK:
            break
        last = now
    return time.monotonic() - t0


def tree_rss_bytes(root: int) -> int:
    """Resident memory of the whole tree: the sum of each process's RSS."""
    total = 0
    for pid in tree_pids(root):
        try:
            resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        total += resident * PAGE_SIZE
    return total


def tree_pss_bytes(root: int) -> int:
    """Proportional set size of the tree (shared pages counted once across processes)."""
    total = 0
    for pid in tree_pids(root):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except (OSError, ValueError, IndexError):
            continue
    return total


def cpu_times() -> dict[int, tuple[float, float]]:
    """Per CPU since boot: (busy seconds, steal seconds), from /proc/stat."""
    out: dict[int, tuple[float, float]] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/stat").read_text().splitlines():
            name, *vals = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            v = [int(x) for x in vals[:8]] + [0] * max(0, 8 - len(vals))
            user, nice, system, _idle, _iowait, irq, softirq, steal = v[:8]
            out[int(name[3:])] = ((user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK)
    return out


def set_tree_affinity(root: int, cpus: set[int]) -> None:
    for pid in tree_pids(root):
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task), cpus)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, proc: Proc, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise StartError(
                f"{proc.name} exited with code {proc.popen.returncode} before listening on "
                f"127.0.0.1:{port}; log {proc.log_path}:\n{proc.log_tail()}"
            )
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise StartError(
        f"{proc.name} did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s; "
        f"log {proc.log_path}:\n{proc.log_tail()}"
    )


def wait_http(url: str, proc: Proc, timeout_s: float) -> None:
    """Wait until ``url`` answers any HTTP status (the server is accepting and parsing)."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if not proc.alive():
            raise StartError(
                f"{proc.name} exited with code {proc.popen.returncode} during start-up; "
                f"log {proc.log_path}:\n{proc.log_tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered: up
        except (OSError, ValueError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise StartError(
        f"{proc.name} did not answer {url} within {timeout_s:.0f} s ({last}); "
        f"log {proc.log_path}:\n{proc.log_tail()}"
    )


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt, so ``finally`` blocks stop everything."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, prev in old.items():
            signal.signal(sig, prev)
