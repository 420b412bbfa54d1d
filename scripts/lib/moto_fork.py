"""Starts moto servers for the test kit by forking one warm Python process.

Importing moto takes about a second of CPU, and the tests start a few hundred moto servers (one
per stand-in region per test): on two cores that was a large share of the whole test run. This
process imports moto once; each server is a fork of it, a process of its own with empty
backends and generators seeded afresh, as a new `moto_server -H 127.0.0.1 -p PORT` would be,
killed on its own to stop a region.

Protocol (crates/testkit, `Moto::start_on`): this process writes `ready` once moto is imported;
then for each line it reads (a port, 0 for one of the kernel's choosing) it forks a server on
that port and writes back the server's pid. It exits at the end of its input, when the test
binary that started it ends, and its servers die with it (parent-death signal).
"""
import ctypes
import os
import random
import signal
import sys

import moto.server
from moto.moto_api._internal import mock_random

# What the first DynamoDB request would import: each server starts warm.
import moto.dynamodb.models  # noqa: F401
import moto.dynamodb.responses  # noqa: F401

PR_SET_PDEATHSIG = 1


def serve(port, zygote):
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != zygote:  # this process ended between the fork and the line above
        os._exit(0)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    # Not the same identifiers as every other server forked from here: moto draws them from its
    # own generator, seeded once at import.
    random.seed()
    mock_random.seed()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    moto.server.main(["-H", "127.0.0.1", "-p", port])


def main():
    # The servers are reaped by the kernel: none lingers as a zombie once killed.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    print("ready", flush=True)
    zygote = os.getpid()
    for line in sys.stdin:
        port = line.strip()
        if not port.isdigit():
            print(f"error: not a port: {port!r}", flush=True)
            continue
        pid = os.fork()
        if pid == 0:
            try:
                serve(port, zygote)
            finally:
                os._exit(0)
        print(pid, flush=True)


main()
