"""`python -m api` (what `make up` runs): N uvicorn processes, each accepting from its own SO_REUSEPORT socket.
Connections opened together spread over the processes (with uvicorn's --workers, one socket shared, the
process that woke first took most of them), a process that dies is replaced on its socket, and SIGTERM
stops them all. Real processes, raw sockets."""

from __future__ import annotations

import signal
import socket
import sys

import psutil
import pytest

from tests.helpers import free_port, service_env, start_process, stop_process, wait_until

CONNECTIONS = 60
# Binomial(60, 1/2) falls under 16 with probability ~1.5e-4; one socket shared by both gave ~13 of 60.
AT_LEAST = 16


def _ask(sock: socket.socket) -> None:
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")


def _answer(sock: socket.socket) -> None:
    answer = b""
    while not answer.endswith(b'{"status":"ok"}'):
        chunk = sock.recv(4096)
        assert chunk, answer
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=30)


def _servers(launcher: psutil.Process) -> list[psutil.Process]:
    return [p for p in launcher.children() if p.status() != psutil.STATUS_ZOMBIE]


def _connections_held(process: psutil.Process, port: int) -> int:
    return sum(c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
               for c in process.net_connections(kind="tcp"))


@pytest.mark.skipif(sys.platform != "linux", reason="SO_REUSEPORT spreads connections on Linux")
@pytest.mark.slow
def test_processes_share_connections_a_dead_one_is_replaced_and_sigterm_stops_all(tmp_path):
    port = free_port()
    api = start_process([sys.executable, "-m", "api", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
                        service_env(tmp_path), tmp_path / "api.log")
    try:
        launcher = psutil.Process(api.pid)
        wait_until(lambda: len(_servers(launcher)) == 2, 60, what="two server processes")
        first = _servers(launcher)
        # Opened together, as a load balancer's or a benchmark's pool does, then each asks and waits.
        connections = [_connect(port) for _ in range(CONNECTIONS)]
        for sock in connections:
            _ask(sock)
        for sock in connections:
            _answer(sock)
        held = {p.pid: _connections_held(p, port) for p in first}
        assert sum(held.values()) == CONNECTIONS and min(held.values()) >= AT_LEAST, held
        for sock in connections:  # kept alive: answered again on the same connection
            _ask(sock)
            _answer(sock)
            sock.close()

        first[0].kill()
        wait_until(lambda: {p.pid for p in _servers(launcher)} - {p.pid for p in first}, 30, 0.2,
                   "a process in place of the killed one")
        for _ in range(20):  # new connections, on either socket, are answered
            with _connect(port) as sock:
                _ask(sock)
                _answer(sock)
        processes = [launcher, *_servers(launcher)]
        api.send_signal(signal.SIGTERM)
        assert api.wait(30) == 0
        wait_until(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes),
                   10, what="every server process to end")
    finally:
        stop_process(api, signal.SIGKILL)
        print((tmp_path / "api.log").read_text(errors="replace")[-3000:])
