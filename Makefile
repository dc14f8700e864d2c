# The two commands from the README: `make demo` and `make test`.
# Both build .venv from nothing (Debian packages included) and are idempotent.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TASKLIB_VENV := .venv-tasklib
TASKLIB_STAMP := $(TASKLIB_VENV)/.installed
DEMO_DIR ?= demo_output

.PHONY: venv task-library-venv chromium demo lint test test-slow bench model clean

venv: $(STAMP)

# pip and setuptools print pages of warnings no user can act on: the log is shown only if the install fails.
$(STAMP): setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing the Python packages into $(VENV) (a few minutes the first time; log: $(VENV)/install.log)"
	@$(PY) -m pip install --quiet --upgrade pip wheel setuptools > $(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; false)
	@$(PY) -m pip install --quiet -e '.[test]' >> $(VENV)/install.log 2>&1 || (cat $(VENV)/install.log; false)
	@touch $(STAMP)

# The reference on-device client (tflite-support needs protobuf<4, so it lives in its own venv).
task-library-venv: $(TASKLIB_STAMP)

$(TASKLIB_STAMP): scripts/make_task_library_venv.sh
	bash scripts/make_task_library_venv.sh $(TASKLIB_VENV)
	@touch $(TASKLIB_STAMP)

# Debian's chromium renders the HTML report in the browser test (real browser, so a failed install fails).
chromium:
	bash scripts/install_chromium.sh --strict

demo: $(STAMP) $(TASKLIB_STAMP)
	$(PY) -m beam_jobs.demo --output_dir $(DEMO_DIR)

# Lint and format check (settings in ruff.toml); part of `make test`, so CI runs it.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(STAMP) $(TASKLIB_STAMP) chromium lint
	$(PY) -m pytest -q -m "not slow" tests

test-slow: $(STAMP) $(TASKLIB_STAMP) chromium
	$(PY) -m pytest -q -m slow tests

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) -m benchmarks.run_all

# Retrains the bundled default model (documented seed; see encoders/default_model/README.md).
model: $(STAMP) $(TASKLIB_STAMP)
	bash scripts/train_default_model.sh

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
