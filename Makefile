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
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-input -e '.[test,mediapipe,serving,tf1ref]'
	touch $@

$(DEMO_DIR)/metadata.json: $(STAMP)
	$(BIN)/python -m emotion_e2e.prepare --source=demo --output_dir=$(DEMO_DIR) --workers=2

# The demo: corpus → TFRecords → inspection → audio model → face model → multimodal model
# warm-started from both → evaluation on the unseen dev identities → table and plots.
# train.py resumes an interrupted run and does nothing for a finished one.
RUNS ?= runs
TRAIN := $(BIN)/python train.py --flagfile=flags/demo.flags --data_dir=$(DEMO_DIR)
demo: $(DEMO_DIR)/metadata.json
	$(BIN)/python -m emotion_e2e.inspect_records '$(DEMO_DIR)/dev-*.tfrecord'
	$(TRAIN) --modalities=audio --run_dir=$(RUNS)/demo_audio
	$(TRAIN) --modalities=face --run_dir=$(RUNS)/demo_face
	$(TRAIN) --modalities=audio,face --run_dir=$(RUNS)/demo_multimodal --learning_rate=2e-4 \
	    --init_from=$(RUNS)/demo_audio,$(RUNS)/demo_face
	for run in demo_audio demo_face demo_multimodal; do $(BIN)/python eval.py --run_dir=$(RUNS)/$$run || exit 1; done
	$(BIN)/python -m emotion_e2e.compare $(RUNS)/demo_audio $(RUNS)/demo_face $(RUNS)/demo_multimodal

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m emotion_e2e.benchmark

clean:
	rm -rf $(VENV) $(DEMO_DIR) $(RUNS)/demo_audio $(RUNS)/demo_face $(RUNS)/demo_multimodal
