"""The engine session without a window: a real worker it follows from start to load to unload,
and a real server it attaches to by URL. Observers see it only through its signals."""

from conftest import STARTUP_MS

from deepseek_desktop.engine_process import EngineProcess
from deepseek_desktop.notifier import Notifier
from deepseek_desktop.state.engine_session import EngineSession
from deepseek_desktop.state.settings import read_json


class Seen:
    """Everything a session said, in order."""

    def __init__(self, session: EngineSession):
        self.states: list[tuple[str, str]] = []
        self.models: list[tuple[object, str]] = []
        self.progress: list[dict] = []
        self.attached: list[tuple] = []
        session.state_changed.connect(lambda state, detail: self.states.append((state, detail)))
        session.model_changed.connect(lambda model_id, hint: self.models.append((model_id, hint)))
        session.load_progress.connect(self.progress.append)
        session.attached.connect(lambda *args: self.attached.append(args))

    def state_names(self) -> list[str]:
        return [state for state, _ in self.states]


def test_a_session_follows_its_worker_through_start_load_and_unload(qtbot, llama_dir):
    notifier = Notifier()
    engine = EngineProcess(restart=False)
    session = EngineSession(notifier, engine)
    seen = Seen(session)
    session.start()
    engine.start()
    try:
        assert seen.states[0] == ("starting", "starting engine…")
        qtbot.waitUntil(lambda: session.state == "idle", timeout=STARTUP_MS)
        assert session.available and seen.attached[0][2] == engine.pid()  # telemetry follows the worker
        session.load({"path": str(llama_dir)})
        qtbot.waitUntil(lambda: session.model_id == "tiny-llama", timeout=60_000)
        qtbot.waitUntil(lambda: session.state == "ready", timeout=10_000)
        names = seen.state_names()
        assert names.index("loading") < names.index("ready")
        assert all(event["type"] == "progress" for event in seen.progress)  # a tiny model may send none
        assert seen.models[-1] == ("tiny-llama", "")
        assert all(a != b for a, b in zip(seen.models, seen.models[1:]))  # said when it changes only
        assert read_json("engine/last_load", None) == {"path": str(llama_dir)}  # reloaded after a crash
        assert session.ready_client() is session.client

        session.unload()
        qtbot.waitUntil(lambda: session.model_id is None, timeout=30_000)
        assert seen.models[-1] == (None, "Last used: tiny-llama (load it in the Models panel)")
        assert session.ready_client() is None
    finally:
        session.close()
    assert not engine.running() and session.state == "stopped"


def test_a_session_attaches_to_a_running_server_by_url(qtbot, server):
    session = EngineSession(Notifier(), url=server.url, api_key=server.api_key)
    seen = Seen(session)
    session.start()
    try:
        assert seen.states[0][0] == "connecting"
        qtbot.waitUntil(lambda: session.model_id == "tiny-llama" and session.state == "ready", timeout=30_000)
        assert seen.attached == [(server.url, server.api_key, None)]  # not a worker of ours: no pid
        assert seen.models == [("tiny-llama", "")]  # the ready event and each refresh say it once
        assert not session._health_timer.isActive()  # its event stream says the state: no polling
    finally:
        session.close()
    assert server.proc.poll() is None  # an engine the app did not start keeps running


def test_a_session_without_an_engine_says_so_and_refuses_commands(qtbot):
    notifier = Notifier()
    session = EngineSession(notifier)
    seen = Seen(session)
    session.start()
    assert seen.states == [("no engine", "")]
    session.load({"path": "/nowhere"})
    session.restart()
    assert [n.text for n in notifier.history] == [
        "the engine is not running", "attached to an engine this app did not start: restart it where it runs"]
