# The two README commands: `make demo` (the main job) and `make test`.
# Both create the virtualenv from the pinned set first; both are idempotent.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= tfrecords/demo
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-input -e '.[test,mediapipe]'
	touch $@

$(DEMO_DIR)/metadata.json: $(STAMP)
	$(BIN)/python -m emotion_e2e.prepare --source=demo --output_dir=$(DEMO_DIR) --workers=2

demo: $(DEMO_DIR)/metadata.json
	$(BIN)/python -m emotion_e2e.inspect_records '$(DEMO_DIR)/*.tfrecord'

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m emotion_e2e.benchmark

clean:
	rm -rf $(VENV) $(DEMO_DIR)
