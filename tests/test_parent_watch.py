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


def test_on_linux_the_kernel_signals_the_worker_when_its_parent_dies():
    """PR_SET_PDEATHSIG, read back with PR_GET_PDEATHSIG in a fresh process."""
    code = ("import ctypes, sys; from engine.serve import die_with_parent; ok = die_with_parent(); "
            "v = ctypes.c_int(); ctypes.CDLL(None).prctl(2, ctypes.byref(v), 0, 0, 0); print(ok, v.value)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    if sys.platform.startswith("linux"):
        assert out.stdout.split() == ["True", "15"], out.stderr  # SIGTERM
    else:
        assert out.stdout.split()[0] == "False"
