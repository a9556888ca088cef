"""The one wrapper for the app's child processes, with real programs: lines (tqdm's carriage
returns included), exit codes, stopping, and a program that cannot start."""

import sys

from deepseek_desktop.child_process import ChildProcess

TALKS_AND_EXITS_3 = ("import sys; sys.stderr.write('step 1\\n 50%|##  \\r100%|####\\nlast words'); "
                     "print('/the/answer'); sys.exit(3)")


def run(qtbot, child: ChildProcess, program: str, args: list[str], timeout: int = 30_000):
    with qtbot.waitSignal(child.ended, timeout=timeout) as ended:
        child.start(program, args)
    return ended.args[0]


def test_lines_and_the_outcome_of_a_program_that_fails(qtbot):
    child = ChildProcess()
    lines = []
    child.line.connect(lines.append)
    outcome = run(qtbot, child, sys.executable, ["-c", TALKS_AND_EXITS_3])
    assert lines == ["step 1", "50%|##", "100%|####", "last words"]  # the last one had no newline
    assert list(child.tail) == lines
    assert outcome.code == 3 and not outcome.ok and not outcome.stopped and outcome.stdout.strip() == "/the/answer"
    assert outcome.describe() == "exited with code 3"


def test_environment_is_added_to_the_apps_own(qtbot):
    child = ChildProcess()
    with qtbot.waitSignal(child.ended, timeout=30_000) as ended:
        child.start(sys.executable, ["-c", "import os; print(os.environ['CHILD_TEST'], 'PATH' in os.environ)"],
                    {"CHILD_TEST": "given"})
    assert ended.args[0].ok and ended.args[0].stdout.split() == ["given", "True"]


def test_stop_terminates_and_says_it_was_asked(qtbot):
    child = ChildProcess()
    child.start(sys.executable, ["-c", "import time; time.sleep(60)"])
    qtbot.waitUntil(lambda: child.pid() > 0, timeout=10_000)
    with qtbot.waitSignal(child.ended, timeout=10_000) as ended:
        child.stop(grace_ms=5000)
    assert ended.args[0].stopped and not child.running()


def test_stop_soon_returns_at_once_and_kills_one_that_ignores_terminate(qtbot):
    child = ChildProcess()
    child.start(sys.executable, ["-c", "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                       "sys.stderr.write('ready\\n'); time.sleep(60)"])
    qtbot.waitSignal(child.line, timeout=10_000).wait()
    with qtbot.waitSignal(child.ended, timeout=10_000) as ended:
        child.stop_soon(grace_ms=300)
        assert child.running()  # terminate ignored, the kill still to come: nothing waited here
    assert ended.args[0].stopped and ended.args[0].crashed and not child.running()


def test_a_quiet_stop_emits_nothing(qtbot):
    child = ChildProcess()
    ended = []
    child.ended.connect(ended.append)
    child.start(sys.executable, ["-c", "import time; time.sleep(60)"])
    qtbot.waitUntil(lambda: child.pid() > 0, timeout=10_000)
    child.stop(grace_ms=0, quiet=True)
    qtbot.wait(200)
    assert not child.running() and ended == []


def test_a_program_that_cannot_start_says_why(qtbot):
    outcome = run(qtbot, ChildProcess(), "/no/such/program", [])
    assert outcome.code is None and not outcome.ok
    assert outcome.describe().startswith("failed to start:")
