"""A demo bombsquad worker, driven by tests/remote_worker.rs.

Each request is a map with an "op" (a Rust struct such as
``Double { op: "double", x: 21 }``); the answer is {"Ok": value} or
{"Err": message}, which the Rust side decodes as Result<T, String>.
Some ops misbehave on purpose: they crash, abort, raise, sleep past the
timeout, close the channel, or answer twice.
"""

import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bombsquad_worker  # noqa: E402
from bombsquad_worker import progress, serve  # noqa: E402


def handle(request):
    op = request.get("op")
    if op == "double":
        return {"Ok": request["x"] * 2}
    if op == "echo":
        return {"Ok": request}
    if op == "pid":
        return {"Ok": os.getpid()}
    if op == "raise":
        raise ValueError("boom")
    if op == "crash":
        sys.stderr.write("worker_demo: crashing on purpose\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(10)  # the signal is delivered before this returns
    if op == "abort":
        os.abort()
    if op == "exit":
        sys.stdout.flush()
        os._exit(request["code"])
    if op == "sleep":
        time.sleep(request["seconds"])
        return {"Ok": request["seconds"]}
    if op == "progress":
        for step in range(request["steps"]):
            progress({"step": step, "of": request["steps"]})
        return {"Ok": request["steps"]}
    if op == "close":
        # Leaves the protocol without leaving the process: the channel ends,
        # the process lives on for a while (a broken worker, on purpose).
        bombsquad_worker._current.sock.close()
        time.sleep(request["seconds"])
        os._exit(0)
    if op == "answer_twice":
        # A buggy worker: an answer, then (after `seconds`) another one for
        # the same call, which lands in the channel while the worker is idle.
        bombsquad_worker._current.send(
            bombsquad_worker.RETURN,
            bombsquad_worker.packb({"Ok": request["x"]}),
            bombsquad_worker._current_call,
        )
        time.sleep(request["seconds"])
        return {"Ok": request["x"]}
    if op == "unencodable":
        return {"Ok": {1, 2, 3}}
    return {"Err": "unknown op %r" % (op,)}


if __name__ == "__main__":
    serve(handle)
