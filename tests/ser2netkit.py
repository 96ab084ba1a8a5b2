"""Real ser2net (the distribution's package) exporting simulated hubs' pseudo-terminals.

:class:`Ser2net` writes a ser2net YAML configuration with one RFC 2217 connection per
device, on free TCP ports of 127.0.0.1, starts ``ser2net -n -d -c CONFIG`` in the
foreground, waits until every port listens, and stops it (or kills it, to drop the
network connection mid-job). Tests that need it are marked :data:`needs_ser2net` and skip,
saying why, where ser2net is not installed (.ci/run installs it).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import pytest

SER2NET = shutil.which("ser2net") or shutil.which("ser2net", path="/usr/sbin:/usr/local/sbin")
needs_ser2net = pytest.mark.skipif(
    SER2NET is None,
    reason="ser2net is not installed (Debian: apt-get install ser2net; .ci/run installs it)",
)
_PARITY = {"none": "n", "even": "e", "odd": "o"}


def free_tcp_port() -> int:
    """A TCP port of 127.0.0.1 nothing listens on (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def connection(name: str, tcp_port: int, device: str, baud: int, parity: str) -> str:
    """One ser2net connection exporting ``device`` over RFC 2217 (see docs/ser2net.md).

    ``chardelay: false`` makes ser2net forward each byte from the hub at once: by default
    it holds bytes for two character times (at least 1 ms) hoping for more, which costs
    a lock-step protocol such as AN3155 that much per acknowledgement.
    """
    return (
        f"connection: &{name}\n"
        f"  accepter: telnet(rfc2217),tcp(nodelay=true),127.0.0.1,{tcp_port}\n"
        f"  connector: serialdev,{device},{baud}{_PARITY[parity]}81,local\n"
        "  options:\n"
        "    chardelay: false\n"
    )


def _listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port`` (read from /proc, no connection:
    a connection would make ser2net open the device)."""
    want = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[1].endswith(want) and fields[3] == "0A":  # 0A: LISTEN
                    return True
    return False


class Ser2net:
    """One ser2net process exporting ``devices``; ``urls[i]`` reaches ``devices[i]``.

    ``parity`` (one for all, or one per device) only goes into the configuration: the
    station sets the line through RFC 2217 when it connects, and a pseudo-terminal keeps
    8N1 whatever it is told (docs/ser2net.md).
    """

    def __init__(
        self,
        devices: Sequence[str],
        workdir: Path,
        *,
        baud: int = 115200,
        parity: str | Sequence[str] = "even",
    ) -> None:
        if SER2NET is None:
            pytest.skip("ser2net is not installed")
        self.devices = list(devices)
        parities = [parity] * len(devices) if isinstance(parity, str) else list(parity)
        self.ports = [free_tcp_port() for _ in self.devices]
        self.urls = [f"rfc2217://127.0.0.1:{p}" for p in self.ports]
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "ser2net.yaml"
        self.log = workdir / "ser2net.log"
        self.config.write_text(
            "%YAML 1.1\n---\n"
            + "\n".join(
                connection(f"hub{i + 1}", port, dev, baud, par)
                for i, (port, dev, par) in enumerate(
                    zip(self.ports, self.devices, parities, strict=True)
                )
            )
        )
        self._pidfile = workdir / "ser2net.pid"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> Ser2net:
        """Start ser2net and wait until all its ports listen."""
        assert SER2NET is not None
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [SER2NET, "-n", "-d", "-c", str(self.config), "-P", str(self._pidfile)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while not all(_listening(p) for p in self.ports):
            if self.process.poll() is not None:
                raise RuntimeError(f"ser2net exited at start: {self.log.read_text()[-500:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"ser2net did not listen within {timeout_s} s")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        """SIGKILL: every connection drops at once, as when the exporter host dies."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM, and wait for it to exit."""
        self._end(signal.SIGTERM)

    def _end(self, sig: signal.Signals) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def __enter__(self) -> Ser2net:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
