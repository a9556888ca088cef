"""Engine → Several nodes (Ray)…: the model exported for vLLM over nodes × GPUs, the Ray head and
worker commands, the vllm serve line, the file written, the command that attaches the app."""

import yaml


def test_several_nodes_shows_the_ray_commands_and_writes_the_vllm_file(make_window, qtbot, llama_dir, tmp_path):
    window = make_window(engine=False)
    window.engine_session.last_load = {"path": str(llama_dir)}
    dialog = window.show_nodes()
    dialog.nodes.setValue(2)
    dialog.gpus.setValue(4)
    dialog.head.setText("10.0.0.1")
    dialog.out.setText(str(tmp_path / "vllm.yaml"))
    dialog.write_button.click()
    commands = dialog.commands.toPlainText().splitlines()
    assert "ray start --head --port 6379" in commands and "ray start --address 10.0.0.1:6379" in commands
    assert any(line.startswith("VLLM_API_KEY=<key> ") and line.endswith("vllm serve --config vllm.yaml")
               for line in commands)
    assert commands[-1] == "deepseek-desktop --engine-url http://10.0.0.1:8000 --api-key <key>"
    written = yaml.safe_load((tmp_path / "vllm.yaml").read_text())
    assert written["model"] == str(llama_dir) and written["tensor-parallel-size"] == 4
    assert written["pipeline-parallel-size"] == 2 and written["distributed-executor-backend"] == "ray"
    assert "wrote" in dialog.message.text()
    dialog.model.setText("")
    assert not dialog.refresh() and "vLLM needs a model" in dialog.message.text()
    dialog.close()
