"""``ganbench`` command lines run as forks of one process that has already imported ganbench, torch and Hydra.

A CLI process spends 3-5 CPU-seconds importing torch and Hydra before it reads its arguments; a corpus of a
hundred bad command lines spends most of its time there. A server (this file run as a script) imports them
once and forks a child per command line. The child is a real process: its own pid, working directory,
environment, stdin from /dev/null, stdout and stderr in files, and the exit status the console script would
give (``sys.exit(main())``, atexit handlers included). What it cannot show is an error raised while importing;
tests/test_cli.py and the other modules still run the installed console script as a subprocess.

    with CLIServers(2) as servers:
        proc = servers.run(["dataset=foo"], cwd=tmp)      # a subprocess.CompletedProcess
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
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
    """Read one JSON request per line on stdin, run it in a child, answer ``{"rc": ...}`` on stdout."""
    import ganbench.cli  # noqa: F401 - the imports every child shares
    import ganbench.config  # noqa: F401
    import ganbench.run.start  # noqa: F401
    import ganbench.run.loop  # noqa: F401
    import torchvision  # noqa: F401

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            _child(req)
        deadline, timed_out = time.monotonic() + req["timeout"], False
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline and not timed_out:
                os.kill(pid, signal.SIGKILL)
                timed_out = True
            time.sleep(0.02)
        rc = os.waitstatus_to_exitcode(status)
        print(json.dumps({"rc": rc, "pid": pid, "timed_out": timed_out}), flush=True)


class CLIServer:
    """One server process; ``run`` is one command line at a time."""

    def __init__(self, env: Dict[str, str], argv0: str):
        self.env, self.argv0 = env, argv0
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=env, text=True, cwd=tempfile.gettempdir())
        ready = self.proc.stdout.readline()
        if not ready:
            raise RuntimeError(f"the CLI server exited at start (exit {self.proc.wait()})")

    def run(self, args: Sequence[str], cwd: Path, env: Optional[Dict[str, str]] = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            req = {"args": list(args), "cwd": str(cwd), "env": env or self.env, "argv0": self.argv0,
                   "stdout": str(out), "stderr": str(err), "timeout": timeout}
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            reply = self.proc.stdout.readline()
            if not reply:
                raise RuntimeError(f"the CLI server died (exit {self.proc.wait()})")
            answer = json.loads(reply)
            if answer["timed_out"]:
                raise subprocess.TimeoutExpired([self.argv0, *args], timeout, err.read_text(errors="replace"))
            rc = answer["rc"]
            return subprocess.CompletedProcess([self.argv0, *args], rc, out.read_text(errors="replace"),
                                               err.read_text(errors="replace"))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class CLIServers:
    """``n`` servers for ``n`` threads: ``run`` takes a free one."""

    def __init__(self, n: int, env: Dict[str, str], argv0: str):
        self.all: List[CLIServer] = [CLIServer(env, argv0) for _ in range(n)]
        self.free: "queue.Queue[CLIServer]" = queue.Queue()
        for server in self.all:
            self.free.put(server)

    def run(self, args: Sequence[str], cwd: Path, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        server = self.free.get()
        try:
            return server.run(args, cwd, env)
        finally:
            self.free.put(server)

    def __enter__(self) -> "CLIServers":
        return self

    def __exit__(self, *exc) -> None:
        for server in self.all:
            server.close()


if __name__ == "__main__":
    serve()
