"""`python -m api [--host H] [--port P] [--workers N] [--log-level L]`: serve the API (what `make up` runs).

N uvicorn servers of `api.app:create_app`, one per process (defaults: KD_HOST, KD_PORT, KD_API_WORKERS,
KD_LOG_LEVEL). On Linux each process accepts from a listening socket of its own, all bound to the port
with SO_REUSEPORT, and the kernel spreads new connections evenly over them. uvicorn's own `--workers`
shares one socket, and the process that wakes first accepts every connection waiting: 50 keep-alive
clients opened together split about 39/11, and those of the busier process waited longer
(docs/BENCHMARKS.md). Elsewhere, and for one process, uvicorn runs as is. (SO_REUSEPORT lets only
processes of the same user join the port.)

The parent binds the sockets before it starts the processes and keeps them, so a connection made while a
process starts (or starts again) waits in that process's backlog instead of piling onto the others. It
starts again a process that dies (a second later) and passes SIGTERM or SIGINT on to them as SIGTERM
(uvicorn's graceful shutdown). A process that cannot start stops them all: the parent exits with
uvicorn's start-up failure code.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import subprocess
import sys
import time

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from kdservice.settings import API_KEEP_ALIVE_SECONDS, get_settings

APP = "api.app:create_app"
BACKLOG = 2048  # uvicorn's default
log = logging.getLogger("kd.api")


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port that other processes of this user may bind too (SO_REUSEPORT)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def serve_socket(fd: int, log_level: str) -> None:
    """One server process, accepting from the listening socket it inherited as fd."""
    config = uvicorn.Config(APP, factory=True, log_level=log_level, timeout_keep_alive=API_KEEP_ALIVE_SECONDS)
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


def supervise(args: argparse.Namespace) -> int:
    """args.workers processes of serve_socket until SIGTERM/SIGINT; one that dies is started again."""
    try:
        sockets = [listening_socket(args.host, args.port) for _ in range(args.workers)]
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", args.host, args.port, exc)
        return STARTUP_FAILURE
    for sock in sockets:
        sock.listen(BACKLOG)

    def start(sock: socket.socket) -> subprocess.Popen:
        fd = sock.fileno()
        return subprocess.Popen([sys.executable, "-m", "api", "--socket-fd", str(fd), "--log-level", args.log_level],
                                pass_fds=[fd])

    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: stopping.append(signum))
    processes = [start(sock) for sock in sockets]
    code = 0
    while not stopping and not code:
        time.sleep(0.5)
        for i, process in enumerate(processes):
            if process.poll() is None or stopping:
                continue
            if process.returncode == STARTUP_FAILURE:
                code = STARTUP_FAILURE
                break
            log.warning("API process %d exited with %s; starting another", process.pid, process.returncode)
            time.sleep(1)
            processes[i] = start(sockets[i])
    for process in processes:
        if process.poll() is None:
            # SIGTERM even after a Ctrl-C: the terminal's SIGINT reached them too, and a second SIGINT
            # would make uvicorn skip its graceful shutdown.
            process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait()
    return code


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m api", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument("--workers", type=int, default=settings.api_workers, help="server processes")
    parser.add_argument("--log-level", default=settings.log_level)
    parser.add_argument("--socket-fd", type=int, help=argparse.SUPPRESS)  # a process of supervise()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if args.socket_fd is not None:
        serve_socket(args.socket_fd, args.log_level)
        return 0
    if args.workers > 1 and sys.platform == "linux":
        return supervise(args)
    uvicorn.run(APP, factory=True, host=args.host, port=args.port, workers=args.workers, log_level=args.log_level,
                timeout_keep_alive=API_KEEP_ALIVE_SECONDS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
