"""A warm interpreter the end-to-end tests start their scripts from (see ``tests/warm.py``).

It imports torch and Ignite once, runs nothing, and forks a child per request; the child becomes
``python SCRIPT ARGS...`` (its own environment, folder, argv, stdin/stdout/stderr) and exits as that
script would. It reports each child's pid when started and its wait status when reaped.

Protocol, one JSON object a line: requests on fd ``argv[1]``: ``{"id", "argv", "env", "cwd", "stdout",
"stderr"}``; replies on fd ``argv[2]``: ``{"id", "pid"}`` then ``{"pid", "status"}``.
"""
import json
import os
import runpy
import select
import sys

# What the case study and the distributed driver import: about 5 s of every launch on this machine.
import ignite.distributed  # noqa: F401
import ignite.engine  # noqa: F401
import ignite.handlers  # noqa: F401
import ignite.metrics  # noqa: F401
import tensorboardX  # noqa: F401
import torch  # noqa: F401
import torch._dynamo  # noqa: F401  # the optimizers' first step imports it

REQUESTS, REPLIES = int(sys.argv[1]), int(sys.argv[2])


def become(request: dict, *protocol) -> None:
    """In the child: turn into ``python argv...`` and run it; return only by raising SystemExit."""
    for stream in protocol:  # closed through their objects: a bare fd closed here would be closed again at exit
        stream.close()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY),
                            (2, request["stderr"], os.O_WRONLY)):
        opened = os.open(path, flags)
        os.dup2(opened, fd)
        os.close(opened)
    script = os.path.abspath(request["argv"][0])
    sys.argv = [script, *request["argv"][1:]]
    sys.path[0] = os.path.dirname(script)  # as `python script` puts its folder first
    runpy.run_path(script, run_name="__main__")
    sys.exit(0)


def serve() -> None:
    # Unbuffered: select() sees what is left to read only if no line waits in a buffer of Python's.
    requests, replies = os.fdopen(REQUESTS, "rb", buffering=0), os.fdopen(REPLIES, "w")
    children = 0
    while True:
        ready, _, _ = select.select([requests], [], [], 0.02 if children else None)
        if ready:
            line = requests.readline()
            if not line:  # the tests are done
                return
            request = json.loads(line)
            sys.stdout.flush(), sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                become(request, requests, replies)
            children += 1
            replies.write(json.dumps({"id": request["id"], "pid": pid}) + "\n")
            replies.flush()
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            children -= 1
            replies.write(json.dumps({"pid": pid, "status": status}) + "\n")
            replies.flush()


if __name__ == "__main__":
    serve()
