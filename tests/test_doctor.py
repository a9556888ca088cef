"""``deepseek-engine doctor`` on this machine (real NVML, disks, port, model folder), and
``engine.doctor.diagnose`` on STAND-IN readings of GPU machines (a driver/CUDA mismatch, a CPU
torch beside a GPU) that no machine here has."""

import json
import socket
import subprocess
import sys

from engine import doctor
from engine.telemetry.gpu import gpu_count
from helpers import ROOT


def run_doctor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", "doctor", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_doctor_here_says_what_it_finds_and_nothing_blocks_a_cpu_setup(llama_dir):
    result = run_doctor("--json", "--model", str(llama_dir))
    assert result.returncode == 0, result.stdout
    report = json.loads(result.stdout)
    found = {f["check"]: f for f in report["findings"]}
    assert report["blocking"] is False
    gpu = found["NVIDIA driver and NVML"]
    if gpu_count() == 0:
        assert gpu["level"] == "note" and "no NVIDIA GPU here" in gpu["says"] and gpu["todo"]
    assert found["model folder"]["level"] == "ok" and found["memory for the model"]["level"] == "ok"
    assert "needs about" in found["memory for the model"]["says"]
    assert any(check.startswith("disk: ") for check in found) and found["Hugging Face cache"]["says"]
    assert report["readings"]["torch_version"].startswith("2.")
    text = run_doctor().stdout  # the same, for people
    assert "[note] NVIDIA driver and NVML" in text or "[ok  ] NVIDIA driver and NVML" in text
    assert text.strip().splitlines()[-1].startswith("nothing blocks")


def test_doctor_exits_1_on_a_taken_port_and_a_folder_that_is_no_model(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_doctor("--port", str(port), "--model", str(tmp_path))
    assert result.returncode == 1, result.stdout
    assert f"[FAIL] port: port {port} is taken" in result.stdout
    assert "[FAIL] model folder" in result.stdout and "-> point at a folder with config.json" in result.stdout
    assert "something blocks" in result.stdout


def test_torch_build_is_read_without_importing_torch():
    code = ("import sys; from engine.doctor import torch_build; v, c = torch_build(); "
            "assert 'torch' not in sys.modules; import torch; assert (v, c) == (torch.__version__, torch.version.cuda), "
            "(v, c, torch.__version__, torch.version.cuda); print(v, c)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


STAND_IN_GPU = [{"name": "NVIDIA A100-SXM4-80GB (stand-in)", "total_bytes": 80 * 2**30, "free_bytes": 79 * 2**30}]


def test_stand_in_readings_a_cuda_build_newer_than_the_driver_blocks_and_says_what_to_install():
    readings = doctor.Readings(gpus=STAND_IN_GPU, driver="535.54.03", driver_cuda="12.2",
                               torch_version="2.6.0+cu124", torch_cuda="12.4", pyside="6.11.3")
    findings = doctor.diagnose(readings)
    [mismatch] = [f for f in findings if f.check == "CUDA version mismatch"]
    assert mismatch.level == "blocking" and "CUDA 12.4" in mismatch.says and "CUDA 12.2 at most" in mismatch.says
    assert "update the NVIDIA driver" in mismatch.todo and "whl/cu122" in mismatch.todo
    assert doctor.blocking(findings) and "[FAIL] CUDA version mismatch" in doctor.report(findings)
    matched = doctor.diagnose(doctor.Readings(gpus=STAND_IN_GPU, driver="550.54", driver_cuda="12.4",
                                              torch_version="2.6.0+cu121", torch_cuda="12.1", pyside="6.11.3"))
    assert not doctor.blocking(matched)


def test_stand_in_readings_a_cpu_torch_beside_a_gpu_and_the_pyside_defect():
    findings = doctor.diagnose(doctor.Readings(gpus=STAND_IN_GPU, driver="550.54", driver_cuda="12.4",
                                               torch_version="2.13.0+cpu", torch_cuda=None, pyside="6.12.0"))
    by_check = {f.check: f for f in findings}
    assert by_check["torch build"].level == "warning" and "built for the CPU while a GPU" in by_check["torch build"].says
    assert by_check["PySide6"].level == "blocking" and "<6.12" in by_check["PySide6"].todo
    lost = doctor.diagnose(doctor.Readings(nvidia_device_files=True, nvml_error="Driver Not Loaded",
                                           torch_version="2.6.0+cu124", torch_cuda="12.4", pyside="6.11.3"))
    assert [f.level for f in lost if f.check == "NVIDIA driver and NVML"] == ["blocking"]
