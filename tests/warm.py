"""Run the end-to-end tests' scripts as processes forked from a warm interpreter (``tests/zygote.py``).

Each launch of the case study or of the distributed driver spent about 5 s of its 7-10 importing torch
and Ignite: the most of the slow tests' time. A child of the zygote is a process of its own (its pid,
environment, folder, arguments, files, signals and exit status), running the script as ``python SCRIPT``
does, with torch and Ignite already imported, nothing run. What differs from a fresh interpreter: the
hash seed (one for all, ``PYTHONHASHSEED=0``) and environment variables read while torch was imported.
The examples' own tests (``test_examples.py``) and the kill scripts still start fresh interpreters.

    >>> done = run([sys.executable, "examples/binary_classification.py", "--max-epochs", "1"])  # doctest: +SKIP
    >>> done.returncode, done.stderr  # doctest: +SKIP
"""
from __future__ import annotations

import atexit
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO

ZYGOTE = str(Path(__file__).resolve().parent / "zygote.py")


class _Zygote:
    def __init__(self) -> None:
        requests_read, self._requests = os.pipe()
        self._replies, replies_write = os.pipe()
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        self._process = subprocess.Popen(
            [sys.executable, ZYGOTE, str(requests_read), str(replies_write)], pass_fds=(requests_read, replies_write),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        os.close(requests_read), os.close(replies_write)
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._started: dict[int, int] = {}  # request id -> pid
        self._exited: dict[int, int] = {}  # pid -> wait status
        self._changed = threading.Condition(self._lock)
        threading.Thread(target=self._read, daemon=True).start()
        atexit.register(os.close, self._requests)  # the zygote ends when its requests end

    def _read(self) -> None:
        with os.fdopen(self._replies) as replies:
            for line in replies:
                reply = json.loads(line)
                with self._changed:
                    if "id" in reply:
                        self._started[reply["id"]] = reply["pid"]
                        self._exited.pop(reply["pid"], None)  # an earlier child's, whose pid was reused
                    else:
                        self._exited[reply["pid"]] = reply["status"]
                    self._changed.notify_all()

    def fork(self, argv: list[str], env: dict[str, str], cwd: str, stdout: str, stderr: str) -> int:
        with self._changed:
            request_id = next(self._ids)
            line = json.dumps({"id": request_id, "argv": argv, "env": env, "cwd": cwd, "stdout": stdout,
                               "stderr": stderr}) + "\n"
            os.write(self._requests, line.encode())
            if not self._changed.wait_for(lambda: request_id in self._started or self._process.poll() is not None,
                                          timeout=180):  # its first answer comes after its imports
                raise RuntimeError("the zygote did not answer in 180 s")
            if request_id not in self._started:
                raise RuntimeError(f"the zygote exited with {self._process.returncode}")
            return self._started.pop(request_id)

    def wait(self, pid: int, timeout: float | None) -> int | None:
        with self._changed:
            self._changed.wait_for(lambda: pid in self._exited, timeout=timeout)
            return self._exited.get(pid)


_zygote: _Zygote | None = None


def _the_zygote() -> _Zygote:
    global _zygote
    if _zygote is None:
        _zygote = _Zygote()
    return _zygote


class Process:
    """A started script: the part of :class:`subprocess.Popen` the tests use (its output in files)."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, cwd: str | Path | None = None) -> None:
        if Path(argv[0]).resolve() != Path(sys.executable).resolve() or len(argv) < 2 or argv[1].startswith("-"):
            raise ValueError(f"warm.Process runs `{sys.executable} SCRIPT ARGS...`, not {argv}")
        self.args = argv
        self.folder = tempfile.mkdtemp(prefix="warm-")
        self._out, self._err = os.path.join(self.folder, "stdout"), os.path.join(self.folder, "stderr")
        Path(self._out).touch(), Path(self._err).touch()
        self.pid = _the_zygote().fork([str(a) for a in argv[1:]], dict(os.environ if env is None else env),
                                      str(cwd or os.getcwd()), self._out, self._err)
        self.returncode: int | None = None
        self.stderr: IO[bytes] = open(self._err, "rb")  # noqa: SIM115  # read as Popen's pipe is, once ended

    def poll(self) -> int | None:
        return self.wait(timeout=0) if self.returncode is None else self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        if self.returncode is None:
            status = _the_zygote().wait(self.pid, timeout)
            if status is None:
                if timeout:
                    raise subprocess.TimeoutExpired(self.args, timeout)
                return None
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def output(self) -> tuple[str, str]:
        return Path(self._out).read_text(errors="replace"), Path(self._err).read_text(errors="replace")


def run(argv: list[str], env: dict[str, str] | None = None, cwd: str | Path | None = None,
        timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """:func:`subprocess.run` with ``capture_output=True, text=True``, the process forked warm."""
    process = Process(argv, env, cwd)
    try:
        returncode = process.wait(timeout)
        stdout, stderr = process.output()
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
    finally:
        process.stderr.close()
        shutil.rmtree(process.folder, ignore_errors=True)
    return subprocess.CompletedProcess(argv, returncode, stdout, stderr)
