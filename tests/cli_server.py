"""``ganbench`` command lines run as forks of one process that has already imported ganbench, torch and Hydra.

A CLI process spends 3-8 CPU-seconds importing torch and Hydra before it reads its arguments; a corpus of a
hundred bad command lines spends most of its time there. A server (this file run as a script) imports them
once and forks a child per command line. The child is a real process: its own pid, working directory,
environment, stdin from /dev/null, stdout and stderr in files, and the exit status the console script would
give (``sys.exit(main())``, atexit handlers included). What it cannot show is an error raised while importing;
tests/test_cli.py and the other modules still run the installed console script as a subprocess.

    with CLIServers(1, cli_env(), str(GANBENCH)) as servers:  # more are started while all are busy
        done = servers.run(["dataset=foo"], cwd=tmp)               # a subprocess.CompletedProcess
        proc = servers.popen([...], cwd=tmp)                       # .pid, .poll(), .wait(), as a Popen

Tests use it through tests/conftest.py (``ganbench_run``, ``ganbench_popen``); tests/test_cli_server.py checks
that a fork gives what the installed script gives.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence


def _child(req: Dict) -> None:
    """In the forked child: become the command line ``req`` and exit as the console script would."""
    import atexit
    import traceback

    rc = 1
    try:
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
            os.close(target)
        sys.argv = [req["argv0"], *req["args"]]
        from ganbench.cli import main

        try:
            sys.exit(main())
        except SystemExit as exc:  # what the interpreter does with sys.exit's argument
            if exc.code is None:
                rc = 0
            elif isinstance(exc.code, int):
                rc = exc.code
            else:
                print(exc.code, file=sys.stderr)
                rc = 1
        except BaseException:  # noqa: BLE001 - an uncaught exception: the traceback, exit 1
            traceback.print_exc()
            rc = 1
        atexit._run_exitfuncs()  # logging.shutdown and anything ganbench registered
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(rc & 0xFF)


def serve() -> None:
    """Answer one JSON request per line on stdin, on stdout:
    ``start`` forks a child for a command line (``{"pid"}``), ``poll`` asks whether it ended (``{"rc"}``, null
    while it runs), ``wait`` waits up to ``timeout`` s and kills it after that (``{"rc", "timed_out"}``)."""
    import ganbench.cli  # noqa: F401 - the imports every child shares
    import ganbench.config  # noqa: F401
    import ganbench.run.start  # noqa: F401
    import ganbench.run.loop  # noqa: F401
    import torchvision  # noqa: F401

    ended: Dict[int, int] = {}

    def reap(pid: int) -> Optional[int]:
        """The child's exit status once it ended (reaped once, kept until ``wait`` hands it out), else None."""
        if pid not in ended:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                ended[pid] = os.waitstatus_to_exitcode(status)
        return ended.get(pid)

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "start":
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                _child(req)
            answer = {"pid": pid}
        elif req["op"] == "poll":
            answer = {"rc": reap(req["pid"])}
        else:  # wait
            deadline, timed_out = time.monotonic() + req["timeout"], False
            while reap(req["pid"]) is None:
                if time.monotonic() > deadline and not timed_out:
                    os.kill(req["pid"], signal.SIGKILL)
                    timed_out = True
                time.sleep(0.02)
            answer = {"rc": ended.pop(req["pid"]), "timed_out": timed_out}
        print(json.dumps(answer), flush=True)


class CLIServer:
    """One server process, serving one caller at a time."""

    def __init__(self, env: Dict[str, str], argv0: str):
        self.env, self.argv0 = env, argv0
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=env, text=True, cwd=tempfile.gettempdir())
        if not self.proc.stdout.readline():
            raise RuntimeError(f"the CLI server exited at start (exit {self.proc.wait()})")

    def ask(self, **req) -> Dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        if not reply:
            raise RuntimeError(f"the CLI server died (exit {self.proc.wait()})")
        return json.loads(reply)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class ForkedCLI:
    """A command line running as a fork of a server: what tests use of ``subprocess.Popen`` (``pid``,
    ``returncode``, ``poll``, ``wait``, ``send_signal``, ``kill``), plus ``stdout``/``stderr`` (text) once it
    ended. It holds its server until it has ended."""

    def __init__(self, servers: "CLIServers", args: Sequence[str], cwd: Path, env: Optional[Dict[str, str]]):
        self.servers, self.args = servers, [servers.argv0, *args]
        self.server = servers.take()
        self.dir = tempfile.TemporaryDirectory()
        self.out, self.err = Path(self.dir.name) / "stdout", Path(self.dir.name) / "stderr"
        self.returncode: Optional[int] = None
        self.stdout = self.stderr = None
        try:
            self.pid = self.server.ask(op="start", args=list(args), cwd=str(cwd), env=env or servers.env,
                                       argv0=servers.argv0, stdout=str(self.out), stderr=str(self.err))["pid"]
        except BaseException:
            self.dir.cleanup()
            servers.give_back(self.server)
            raise

    def _ended(self, rc: int) -> int:
        self.returncode = rc
        self.stdout = self.out.read_text(errors="replace")
        self.stderr = self.err.read_text(errors="replace")
        self.dir.cleanup()
        self.servers.give_back(self.server)
        return rc

    def poll(self) -> Optional[int]:
        if self.returncode is None:
            rc = self.server.ask(op="poll", pid=self.pid)["rc"]
            if rc is not None:
                self._ended(rc)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float = 600) -> int:
        """Wait for the end; after ``timeout`` s the child is killed and TimeoutExpired raised."""
        if self.returncode is None:
            answer = self.server.ask(op="wait", pid=self.pid, timeout=timeout)
            self._ended(answer["rc"])
            if answer["timed_out"]:
                raise subprocess.TimeoutExpired(self.args, timeout, self.stderr)
        return self.returncode


class CLIServers:
    """Servers for the callers of one test process: each command line takes a free server, or starts one."""

    def __init__(self, n: int, env: Dict[str, str], argv0: str):
        self.env, self.argv0 = env, argv0
        self.lock = threading.Lock()
        self.all: List[CLIServer] = [CLIServer(env, argv0) for _ in range(n)]
        self.free: List[CLIServer] = list(self.all)

    def take(self) -> CLIServer:
        with self.lock:
            if self.free:
                return self.free.pop()
        server = CLIServer(self.env, self.argv0)
        with self.lock:
            self.all.append(server)
        return server

    def give_back(self, server: CLIServer) -> None:
        with self.lock:
            self.free.append(server)

    def popen(self, args: Sequence[str], cwd: Path, env: Optional[Dict[str, str]] = None) -> ForkedCLI:
        return ForkedCLI(self, args, cwd, env)

    def run(self, args: Sequence[str], cwd: Path, env: Optional[Dict[str, str]] = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
        """The command line to its end, as ``subprocess.run(..., capture_output=True, text=True)``."""
        proc = self.popen(args, cwd, env)
        proc.wait(timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout, proc.stderr)

    def close(self) -> None:
        for server in self.all:
            server.close()

    def __enter__(self) -> "CLIServers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":
    serve()
