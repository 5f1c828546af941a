# The two README commands: `make demo` (the main job) and `make test`.
# Both create the virtualenv from the pinned set first; both are idempotent.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= tfrecords/demo
export TF_CPP_MIN_LOG_LEVEL ?= 3

.PHONY: demo test bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-input -e '.[test,mediapipe,serving,tf1ref,beam]'
	touch $@

$(DEMO_DIR)/metadata.json: $(STAMP)
	$(BIN)/python -m emotion_e2e.prepare --source=demo --output_dir=$(DEMO_DIR) --workers=2

# The demo: corpus → TFRecords → inspection → audio model → face model → multimodal model
# warm-started from both → evaluation on the unseen dev identities → table and plots.
# Each stage is one flag file (flags/demo_*.flags); only the data and run directories are passed here.
# train.py resumes an interrupted run and does nothing for a finished one.
STAGES := audio face multimodal
demo: $(DEMO_DIR)/metadata.json
	$(BIN)/python -m emotion_e2e.inspect_records '$(DEMO_DIR)/dev-*.tfrecord'
	for stage in $(STAGES); do \
	    $(BIN)/python train.py --flagfile=flags/demo_$$stage.flags --data_dir=$(DEMO_DIR) --run_dir=runs/demo_$$stage \
	    || exit 1; done
	for stage in $(STAGES); do $(BIN)/python eval.py --run_dir=runs/demo_$$stage || exit 1; done
	$(BIN)/python -m emotion_e2e.compare runs/demo_audio runs/demo_face runs/demo_multimodal

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup  # two processes: graph building is single-threaded

bench: $(STAMP)
	$(BIN)/python -m emotion_e2e.benchmark

clean:
	rm -rf $(VENV) $(DEMO_DIR) runs/demo_audio runs/demo_face runs/demo_multimodal
