"""``TcpProxy`` in a process of its own: the same cut/restore, but its byte pumping does not share
the test process's interpreter (and GIL) with a test client firing hundreds of requests.

``python -m tests.proxy_process HOST PORT`` prints the listening port, then obeys ``cut``,
``restore`` and ``close`` lines on stdin, answering ``ok`` to each.
"""

from __future__ import annotations

import subprocess
import sys

from tests.tcp_proxy import TcpProxy


class ProxyProcess:
    """A ``TcpProxy`` to ``upstream`` run by a child process; ``cut()``/``restore()`` return once applied."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._proc = subprocess.Popen([sys.executable, "-m", "tests.proxy_process", upstream[0], str(upstream[1])],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert self._proc.stdout is not None
        self.port = int(self._proc.stdout.readline())

    def _command(self, line: str) -> None:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()
        answer = self._proc.stdout.readline().strip()
        if answer != "ok":
            raise RuntimeError(f"proxy to {self.upstream}: {line!r} answered {answer!r}")

    def cut(self) -> None:
        self._command("cut")

    def restore(self) -> None:
        self._command("restore")

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._command("close")
                self._proc.wait(10)
            except (OSError, RuntimeError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()


def main() -> None:
    proxy = TcpProxy((sys.argv[1], int(sys.argv[2])))
    print(proxy.port, flush=True)
    actions = {"cut": proxy.cut, "restore": proxy.restore, "close": proxy.close}
    for line in sys.stdin:
        action = actions.get(line.strip())
        if action is None:
            print(f"unknown command {line.strip()!r}", flush=True)
            continue
        action()
        print("ok", flush=True)
        if line.strip() == "close":
            return
    proxy.close()  # stdin closed: the test process is gone


if __name__ == "__main__":
    main()
