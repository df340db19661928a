# The two commands of README.md. Each creates .venv from requirements.lock if it is missing.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.facelab-installed
JOBS    ?= 2

.PHONY: test test-fast nbval book book-isolated env lock strip clean gpu-check

$(STAMP): requirements.lock pyproject.toml
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check uv==0.13.8
	$(VENV)/bin/uv pip install -q --python $(VPY) --require-hashes -r requirements.lock
	$(VENV)/bin/uv pip install -q --python $(VPY) --no-deps -e .
	@touch $(STAMP)

env: $(STAMP)

# The whole test suite: unit tests, doctests, notebook output check, chapters under nbval (quick profile),
# then the book is built and every page is checked in headless Chromium (tests/test_browser.py;
# needs the chromium and chromium-driver packages, which .ci/run installs).
# nbval and the book build each execute every chapter on one core, so they run side by side, one
# thread each (two processes with two threads each on two cores stall each other badly); the
# book gets its own FACELAB_CACHE so the two never write the same run folder at once.
test: $(STAMP)
	$(VPY) -m pytest -n $(JOBS) -q -m "not browser" tests facelab
	OMP_NUM_THREADS=1 $(MAKE) -j2 --output-sync=target nbval book-isolated
	FACELAB_REQUIRE_BOOK=1 $(VPY) -m pytest -p no:xdist -q -m browser tests/test_browser.py

# Every chapter under nbval (quick profile): a cell that raises, an assertion included, fails.
nbval: $(STAMP)
	$(VPY) -m pytest -p no:xdist -q --nbval-lax book

book-isolated: $(STAMP)
	FACELAB_CACHE=$(CURDIR)/_build/facelab-cache $(MAKE) book

# Skips the tests marked slow and the browser test; for quick iterations.
test-fast: $(STAMP)
	$(VPY) -m pytest -n $(JOBS) -q -m "not slow and not browser" tests facelab

# The executed book into _build/html, then each chapter's execution time.
book: $(STAMP)
	$(VENV)/bin/jupyter-book build . --path-output .
	@$(VPY) -m facelab.book_timings _build

# On a GPU machine: the CUDA test tier, a 2-process torchrun and each recipe's full profile
# (steps/s), into one JSON file. DRY_RUN=1 runs the same script on the CPU with tiny sizes.
GPU_CHECK_OUT ?= gpu-check.json
gpu-check: $(STAMP)
	$(VPY) -m facelab.bench.gpu_check --out $(GPU_CHECK_OUT) $(if $(DRY_RUN),--dry-run,)

lock:
	uv pip compile -q requirements.in --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 -o requirements.lock

strip:
	$(VPY) -m facelab.notebooks strip book

clean:
	rm -rf _build .pytest_cache
