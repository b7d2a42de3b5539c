"""`asgi-router serve` as a process (CONTRACT §5, STYLE's hypercorn lessons): a broken config
exits 1; SIGTERM drains; `--workers N` runs our own supervisor whose workers each serve, each
reload in place on SIGHUP, survive a broken file, share their metrics, get restarted when
killed, and all stop on SIGTERM leaving no process behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.helpers import Gateway, model, provider, start_gateway, until, wait_ready

MSG = [{"role": "user", "content": "hello"}]
SLOW_TEXT = "a stream started before SIGTERM still finishes"


def config(sim, extra: str = "") -> str:
    return (
        provider("a", sim.base_url)
        + model("small", "a", "m-serve-small")
        + model("slow", "a", "m-serve-slow")
        + '[fallbacks.chat]\nchain = ["small"]\n\n'
        + extra
    )


# --- processes, through /proc (no psutil) --------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # [state, ppid, ...]; the name may hold spaces


def alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z"  # a zombie has exited, only not been reaped


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[0] != "Z" and int(st[1]) == pid:
                out.append(int(entry))
    return sorted(out)


def workers(gw: Gateway) -> list[int]:
    def cmdline(pid: int) -> bytes:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return b""

    return [p for p in children(gw.proc.pid) if b"spawn_main" in cmdline(p)]


def log_events(gw: Gateway, event: str) -> list[dict[str, Any]]:
    lines = (line for line in gw.logs().splitlines() if line.startswith("{") and f'"{event}"' in line)
    return [rec for rec in map(json.loads, lines) if rec.get("event") == event]


def started_workers(gw: Gateway, startups: int = 2) -> list[int]:
    """The pids of the 2 workers once ``startups`` worker starts have loaded their config
    (wait_ready only proves that one worker answers)."""
    until(lambda: sum(e["reason"] == "startup" for e in log_events(gw, "config_loaded")) >= startups, 15)
    pids = workers(gw)
    assert len(pids) == 2, pids
    return pids


@contextlib.contextmanager
def only(worker: int, all_workers: list[int]) -> Iterator[None]:
    """Freeze every other worker (SIGSTOP): new connections on the shared socket can then only
    be accepted by ``worker``. Each request below uses a fresh connection."""
    frozen = [p for p in all_workers if p != worker]
    try:
        for p in frozen:
            os.kill(p, signal.SIGSTOP)
        until(lambda: all((_stat(p) or ["T"])[0] == "T" for p in frozen), timeout=2, every=0.005)
        yield
    finally:
        for p in frozen:
            os.kill(p, signal.SIGCONT)


def chat(gw: Gateway, name: str = "chat") -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", json={"model": name, "messages": MSG}, timeout=10)


def names(gw: Gateway) -> set[str]:
    return {m["id"] for m in httpx.get(gw.url + "/v1/models", timeout=5).json()["data"]}


def stop_and_check_nothing_left(gw: Gateway) -> None:
    descendants = children(gw.proc.pid)
    descendants += [c for p in descendants for c in children(p)]
    assert gw.stop(signal.SIGTERM, timeout=10) == 0, gw.logs()
    until(lambda: not any(alive(p) for p in descendants), timeout=5)
    assert "Traceback" not in gw.logs()


class SlowStream(threading.Thread):
    """A streamed request that reports when its first content arrived, then reads to the end."""

    def __init__(self, gw: Gateway) -> None:
        super().__init__()
        self.gw = gw
        self.started = threading.Event()
        self.text = ""
        self.finish: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        # its own client: Gateway.stop() closes the clients it made, and this one must outlive it
        client: Any = openai.OpenAI(base_url=self.gw.base_url, api_key="unused", max_retries=0, timeout=10)
        try:
            for chunk in client.chat.completions.create(model="slow", messages=MSG, stream=True):
                if chunk.choices:
                    self.text += chunk.choices[0].delta.content or ""
                    self.started.set()
                    if chunk.choices[0].finish_reason:
                        self.finish.append(chunk.choices[0].finish_reason)
        except BaseException as e:
            self.error = e
        finally:
            client.close()
            self.started.set()


# --- a broken config at start ----------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2])
def test_serve_with_a_broken_config_exits_1_listing_every_error(tmp_path, sim, n):
    text = config(sim).replace('chain = ["small"]', 'chain = ["small", "nope"]')
    text = text.replace("api_keys = []", 'api_keys = ["env:ASGI_ROUTER_TEST_SURELY_UNSET"]')
    gw = start_gateway(tmp_path, text, workers=n, wait=False)
    try:
        assert gw.proc.wait(timeout=15) == 1
    finally:
        gw.stop()
    out = gw.logs()
    assert "the config has errors; nothing started" in out
    assert "[fallbacks.chat.chain]" in out and "'nope'" in out
    assert "[providers.a.api_keys]" in out and "ASGI_ROUTER_TEST_SURELY_UNSET" in out
    assert "Traceback" not in out


# --- SIGTERM drain, one process ----------------------------------------------------------------------


def test_sigterm_drains_readyz_then_finishes_the_stream_in_flight(gateway, sim):
    sim.script("m-serve-slow", default={"text": SLOW_TEXT, "chunks": 8, "chunk_delay_s": 0.3})
    gw = gateway(config(sim), extra_args=("--drain-seconds", "1"))
    stream = SlowStream(gw)
    stream.start()
    assert stream.started.wait(5) and stream.error is None
    t0 = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    r = until(lambda: (r := httpx.get(gw.url + "/readyz", timeout=2)).status_code == 503 and r)
    assert isinstance(r, httpx.Response) and r.json() == {"status": "draining"}
    assert time.monotonic() - t0 < 1.0  # well inside the drain window

    def listener_closed() -> float | None:
        try:
            httpx.get(gw.url + "/healthz", timeout=2)
        except httpx.ConnectError:
            return time.monotonic()
        return None

    closed_at = until(listener_closed, timeout=5)
    assert isinstance(closed_at, float) and closed_at - t0 >= 0.9  # open through the drain window
    assert stream.is_alive() and gw.proc.poll() is None  # the stream still runs: its process waits
    assert gw.proc.wait(timeout=10) == 0
    stream.join(5)
    assert stream.error is None, stream.error
    assert stream.text == SLOW_TEXT and stream.finish == ["stop"]
    assert "Traceback" not in gw.logs()


# --- serve --workers 2 ---------------------------------------------------------------------------------


def test_workers_each_serve_reload_in_place_survive_a_broken_file_and_stop(gateway, sim):
    sim.script("m-serve-slow", default={"text": SLOW_TEXT, "chunks": 5, "chunk_delay_s": 0.2})
    gw = gateway(config(sim), workers=2)
    pids = started_workers(gw)

    # each worker answers on its own; the counters of both add up in /metrics
    def served() -> float:
        return gw.metric("router_requests_total", route="chat", status="200")

    def served_is(total: float) -> Callable[[], bool]:
        return lambda: served() == total

    for pid, n, total in zip(pids, (3, 2), (3, 5), strict=True):
        with only(pid, pids):
            assert all(chat(gw).status_code == 200 for _ in range(n))
            until(served_is(total))  # counted just after the answer is sent
    for pid in pids:
        with only(pid, pids):
            assert served() == 5  # whichever worker answers /metrics
    assert gw.metric("router_config_reloads_total", result="success") == 2  # one startup each

    # SIGHUP: every worker reloads in place (same pids), the new name visible on each
    gw.write_config(config(sim, model("fresh", "a", "m-serve-small")))
    gw.proc.send_signal(signal.SIGHUP)
    for pid in pids:
        with only(pid, pids):
            until(lambda: "fresh" in names(gw), timeout=3)
            assert chat(gw, "fresh").status_code == 200
    assert workers(gw) == pids
    assert gw.metric("router_config_reloads_total", result="success") == 4

    # a broken file on SIGHUP: both refuse it, both keep serving the last good graph
    gw.write_config(config(sim, model("fresh", "a", "m-serve-small")) + "[models.broken\n")
    gw.proc.send_signal(signal.SIGHUP)
    until(lambda: gw.metric("router_config_reloads_total", result="failure") == 2, timeout=3)
    for pid in pids:
        with only(pid, pids):
            assert chat(gw, "fresh").status_code == 200 and "fresh" in names(gw)
    assert all(chat(gw).status_code == 200 for _ in range(10))
    assert workers(gw) == pids and gw.proc.poll() is None
    assert "worker_died" not in gw.logs()

    # SIGTERM: a stream in flight finishes, then everything exits 0 and nothing is left
    stream = SlowStream(gw)
    stream.start()
    assert stream.started.wait(5)
    stop_and_check_nothing_left(gw)
    stream.join(5)
    assert stream.error is None, stream.error
    assert stream.text == SLOW_TEXT and stream.finish == ["stop"]


def test_a_killed_worker_is_restarted_and_its_counts_kept(gateway, sim):
    gw = gateway(config(sim), workers=2)
    pids = started_workers(gw)
    victim, survivor = pids
    with only(victim, pids):
        assert chat(gw).status_code == 200
        until(lambda: gw.metric("router_requests_total", route="chat", status="200") == 1)
    os.kill(victim, signal.SIGKILL)
    assert all(chat(gw).status_code == 200 for _ in range(3))  # the other one serves meanwhile
    new = started_workers(gw, 3)  # the two first ones and the replacement
    assert survivor in new and victim not in new and not alive(victim)
    [replacement] = [p for p in new if p != survivor]
    with only(replacement, new):
        until(lambda: httpx.get(gw.url + "/readyz", timeout=5).status_code == 200, timeout=10)
        assert chat(gw).status_code == 200
        # the dead worker's counted request is still in the sum
        until(lambda: gw.metric("router_requests_total", route="chat", status="200") == 5)
    assert '"worker_died"' in gw.logs()
    stop_and_check_nothing_left(gw)


def test_a_worker_restarted_while_the_file_is_broken_serves_its_siblings_graph(gateway, sim):
    """Not the graph of the first start nor nothing: the last text a worker compiled, kept in
    the supervisor's private run directory. The replacement rejects the broken file as its
    sibling did, starts at once on that copy, and follows the file from then on."""
    gw = gateway(config(sim), workers=2)
    pids = started_workers(gw)

    def loaded(reason: str) -> int:
        return sum(e["reason"] == reason for e in log_events(gw, "config_loaded"))

    gw.write_config(config(sim, model("fresh", "a", "m-serve-small")))
    gw.proc.send_signal(signal.SIGHUP)
    until(lambda: loaded("SIGHUP") == 2, timeout=5)
    gw.write_config(config(sim, model("fresh", "a", "m-serve-small")) + "[models.broken\n")
    gw.proc.send_signal(signal.SIGHUP)
    until(lambda: len(log_events(gw, "config_rejected")) == 2, timeout=5)
    os.kill(pids[0], signal.SIGKILL)
    until(lambda: loaded("startup (last good)") == 1, timeout=10)
    new = workers(gw)
    assert len(new) == 2 and pids[1] in new and pids[0] not in new
    [replacement] = [p for p in new if p != pids[1]]
    with only(replacement, new):
        until(lambda: httpx.get(gw.url + "/readyz", timeout=5).status_code == 200, timeout=10)
        assert "fresh" in names(gw) and chat(gw, "fresh").status_code == 200
    assert [d["exitcode"] for d in log_events(gw, "worker_died")] == [-signal.SIGKILL]  # no retry
    rejected = log_events(gw, "config_rejected")
    assert [r["reason"] for r in rejected] == ["SIGHUP", "SIGHUP", "startup"]
    assert "invalid TOML" in str(rejected[-1]["errors"])

    gw.write_config(config(sim, model("fixed", "a", "m-serve-small")))
    gw.proc.send_signal(signal.SIGHUP)
    for pid in new:
        with only(pid, new):
            until(lambda: "fixed" in names(gw), timeout=5)
    assert "worker_start_failed" not in gw.logs()
    stop_and_check_nothing_left(gw)


def test_a_worker_with_neither_a_good_file_nor_a_good_copy_waits_for_a_good_file(gateway, sim):
    """The copy spoilt too: the new worker says why and exits 3, the supervisor retries with
    backoff, the other worker serves throughout, and a fixed file brings it back."""
    gw = gateway(config(sim), workers=2)
    pids = started_workers(gw)
    [supervisor] = log_events(gw, "supervisor_started")
    copy = Path(supervisor["run_dir"]) / "last-good.toml"
    until(copy.exists)
    assert oct(copy.stat().st_mode & 0o777) == "0o600"
    gw.write_config(config(sim) + "[models.broken\n")
    copy.write_text(config(sim) + "[models.broken\n")
    os.kill(pids[0], signal.SIGKILL)
    until(lambda: log_events(gw, "worker_start_failed"), timeout=8)
    assert all(chat(gw).status_code == 200 for _ in range(5))
    died = until(lambda: len(d := log_events(gw, "worker_died")) == 2 and d)
    assert isinstance(died, list) and [d["exitcode"] for d in died] == [-signal.SIGKILL, 3]
    assert log_events(gw, "last_good_rejected")
    gw.write_config(config(sim, model("fresh", "a", "m-serve-small")))
    gw.proc.send_signal(signal.SIGHUP)  # the survivor reloads; the dead slot is retried at once

    def started_on_the_fixed_file() -> bool:
        return any(e["reason"] == "startup" and e["names"] == 4 for e in log_events(gw, "config_loaded"))

    until(started_on_the_fixed_file, timeout=8)
    new = workers(gw)
    assert len(new) == 2 and pids[1] in new and pids[0] not in new
    [replacement] = [p for p in new if p != pids[1]]
    with only(replacement, new):
        until(lambda: httpx.get(gw.url + "/readyz", timeout=5).status_code == 200, timeout=10)
        assert "fresh" in names(gw)
    assert "invalid TOML" in gw.logs()  # the start failure names the file's error
    stop_and_check_nothing_left(gw)  # no Traceback either
    assert not Path(supervisor["run_dir"]).exists()


def test_sighup_while_workers_start_does_not_kill_them(tmp_path, sim):
    """A worker takes a moment to install its handlers; SIGHUP's default action would kill it."""
    gw = start_gateway(tmp_path, config(sim), workers=2, wait=False)
    try:
        until(lambda: "supervisor_started" in gw.logs(), timeout=10, every=0.01)
        for _ in range(10):
            gw.proc.send_signal(signal.SIGHUP)
            time.sleep(0.05)
        wait_ready(gw)
        pids = started_workers(gw)
        for pid in pids:  # each is up and answering (the held-back SIGHUP was handled, not fatal)
            with only(pid, pids):
                until(lambda: httpx.get(gw.url + "/readyz", timeout=5).status_code == 200, timeout=10)
        assert "worker_died" not in gw.logs()
        stop_and_check_nothing_left(gw)
    finally:
        gw.stop()
