# The two commands of README.md. Each creates .venv from requirements.lock if it is missing.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.facelab-installed
JOBS    ?= 2

.PHONY: test test-fast book env lock strip clean

$(STAMP): requirements.lock pyproject.toml
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check uv==0.13.8
	$(VENV)/bin/uv pip install -q --python $(VPY) --require-hashes -r requirements.lock
	$(VENV)/bin/uv pip install -q --python $(VPY) --no-deps -e .
	@touch $(STAMP)

env: $(STAMP)

# The whole test suite: unit tests, doctests, notebook output check, chapters under nbval (quick profile).
test: $(STAMP)
	$(VPY) -m pytest -n $(JOBS) -q tests facelab
	$(VPY) -m pytest -q --nbval-lax book

# Skips the tests marked slow; for quick iterations.
test-fast: $(STAMP)
	$(VPY) -m pytest -n $(JOBS) -q -m "not slow" tests facelab

# The executed book into _build/html.
book: $(STAMP)
	$(VENV)/bin/jupyter-book build . --path-output .
	@$(VPY) -m facelab.book_timings _build

lock:
	uv pip compile -q requirements.in --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 -o requirements.lock

strip:
	$(VPY) -m facelab.notebooks strip book

clean:
	rm -rf _build .pytest_cache
