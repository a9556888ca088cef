"""``serve --parent-pid``: the worker exits when the process it watches dies, whether that process
is its parent (the desktop app) or another one (a script passing some pid)."""

import subprocess
import sys

from helpers import ROOT


def test_the_worker_exits_when_a_watched_process_that_is_not_its_parent_dies():
    watched = subprocess.Popen(["sleep", "600"])
    worker = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--port", "0", "--parent-pid", str(watched.pid)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        watched.kill()
        watched.wait()
        worker.wait(30)
        assert worker.returncode == 0
        assert "parent process" in worker.stderr.read()
    finally:
        if worker.poll() is None:
            worker.kill()
