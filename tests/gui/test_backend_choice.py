"""The backend choice without starting an engine: ``--backend`` and Engine → Backend remember it,
a launch builds the engine it names, and vLLM that is not installed says how to get it."""

from deepseek_desktop.app import make_engine, parse_args
from deepseek_desktop.engine_process import EngineProcess
from deepseek_desktop.state.settings import chosen_backend, remember_backend, write_json
from deepseek_desktop.vllm_process import VllmProcess


def test_the_backend_is_remembered_and_builds_its_engine(tmp_path):
    assert chosen_backend() == "built-in" and type(make_engine("built-in", None, False)) is EngineProcess
    assert parse_args(["--backend", "vllm"]).backend == "vllm"
    remember_backend("vllm")
    assert chosen_backend() == "vllm"
    write_json("engine/last_load", {"path": str(tmp_path / "m")})
    engine = make_engine(chosen_backend(), None, False)
    assert isinstance(engine, VllmProcess) and engine.model_path == str(tmp_path / "m")  # the last model served
    assert make_engine("vllm", "/elsewhere", False).model_path == "/elsewhere"


def test_engine_backend_menu_remembers_the_choice(make_window):
    window = make_window(engine=False)
    [menu] = [a.menu() for a in window.menuBar().actions() if a.text() == "&Engine"]
    [backend] = [a.menu() for a in menu.actions() if a.text() == "Backend"]
    [vllm] = [a for a in backend.actions() if a.objectName() == "backend-vllm"]
    vllm.trigger()
    assert chosen_backend() == "vllm"
    assert "vllm from the next launch" in window.notifier.history[-1].text
    # The menu itself says when a choice takes effect (switching the running engine is not safe).
    [note] = [a for a in backend.actions() if a.objectName() == "backend-next-launch"]
    assert note.text().startswith("Applies at the next launch (") and not note.isEnabled()
    assert "next" in vllm.toolTip() and backend.toolTipsVisible()


def test_vllm_not_installed_fails_once_saying_how_to_get_it(qtbot, monkeypatch):
    engine = VllmProcess("/some/model", python=None)
    engine.python = None  # as where no .venv-vllm, DEEPSEEK_VLLM_PYTHON nor vllm on PATH exists
    said = []
    engine.finished.connect(said.append)
    engine.start()
    assert engine.state == "failed" and not engine.running()
    assert "make vllm" in said[0] and "DEEPSEEK_VLLM_PYTHON" in said[0]
    no_model = VllmProcess(None, python="/usr/bin/python3")
    no_model.finished.connect(said.append)
    no_model.start()
    assert no_model.state == "failed" and "pick one in Models and press Load" in said[-1]
