"""SIGTERM ends the server promptly even while a client holds /admin/events open (the desktop app
always does): the stream is ended rather than waited out for the 5 s graceful timeout."""

import signal
import threading

import httpx

from helpers import EngineServer


def test_sigterm_ends_open_event_streams_and_the_server_exits_promptly():
    srv = EngineServer(None).start(wait_ready=False)
    received, ended = [], threading.Event()

    def listen():
        with httpx.stream("GET", srv.url + "/admin/events", headers=srv.headers, timeout=30) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    received.append(line)
        ended.set()  # the server closed the stream: no exception, a clean end

    threading.Thread(target=listen, daemon=True).start()
    try:
        for _ in range(200):  # the first event (the current state) arrives at once
            if received:
                break
            ended.wait(0.05)
        assert received
        srv.proc.send_signal(signal.SIGTERM)
        srv.proc.wait(3)  # the graceful timeout is 5 s: waiting it out would fail here
        assert ended.wait(3)
    finally:
        srv.stop()
