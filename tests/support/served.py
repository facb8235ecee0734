"""`scripts/serve.py` (command 1) as a process of the suites: tests/test_serve.py (two stacks on one
host, signals, Flower) and tests/test_fleet.py (the hosts of a fleet, SERVE_ROLE=web / worker)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.stack import ROOT, free_port, wait_for


def sessions_alive(sids: set) -> list:
    """(pid, session id, command) of every live process in one of these sessions."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        state, sid = fields[0], int(fields[3])
        if sid in sids and state != "Z":
            found.append((int(entry.name), sid, stat[stat.index("(") + 1:stat.rindex(")")]))
    return found


class Served:
    """One `python scripts/serve.py` with its own ports, sharing `shared` (REDIS_URL, DATABASE_URL...).
    A `launcher` (tests/test_fleet.py's other host: new PID namespace) goes in front of the command;
    its pids then mean nothing here, so such a serve.py is stopped through its process group."""

    def __init__(self, tmp: Path, name: str, shared: dict, env: dict | None = None, launcher: tuple = (),
                 cwd: Path = ROOT):
        self.port, self.flower_port = free_port(), free_port()
        self.log_path = tmp / f"serve-{name}.log"
        self.log = open(self.log_path, "wb")
        self.env = {**os.environ, **shared, "HOST": "127.0.0.1", "PORT": str(self.port),
                    "FLOWER_PORT": str(self.flower_port), "READY_TIMEOUT": "150", "OMP_NUM_THREADS": "1",
                    **(env or {})}
        self.env.pop("FLOWER_BASIC_AUTH", None)
        self.launcher = launcher
        self.env["PYTHONPATH"] = str(ROOT)  # (`cwd` may be another host's folder)
        self.proc = subprocess.Popen([*launcher, sys.executable, "-m", "scripts.serve"], cwd=cwd,
                                     env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.base = f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def child_pids(self) -> dict:
        return {tag: int(pid) for tag, pid in re.findall(r"started (\w+) \(pid (\d+)\)", self.output())}

    def wait_ready(self) -> None:
        wait_for(lambda: "Press Ctrl-C" in self.output(), 180, "serve.py's banner", [self])

    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def name(self) -> str:
        return f"serve.py:{self.port}"

    def tail(self) -> str:
        return self.output()[-4000:]

    def kill(self) -> None:
        """SIGKILL serve.py (in a namespace: the whole namespace goes with it, as a host losing power)."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def close(self) -> None:
        if self.launcher:
            if self.alive():
                try:  # SIGTERM to serve.py (the launcher's child): it stops its children, and the launcher ends
                    with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as fh:
                        for pid in fh.read().split():
                            os.kill(int(pid), signal.SIGTERM)
                    self.proc.wait(timeout=60)
                except (OSError, subprocess.TimeoutExpired):
                    pass
                if self.alive():
                    self.kill()
        elif self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if not self.launcher:
            sids = set(self.child_pids().values())
            for pid, _, _ in sessions_alive(sids):  # never leave a stack behind a failed test
                os.kill(pid, signal.SIGKILL)
        if not self.log.closed:
            self.log.close()
