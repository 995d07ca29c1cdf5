# quicfleet — the two commands a user needs: `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .stamps
APT_LISTS := $(wildcard deploy/apt/*.txt)
# What running needs (`make run`: the host's packages and the QEMU lab's); the rest is for `make test`.
RUN_APT_LISTS := deploy/apt/run.txt deploy/apt/vm.txt

.PHONY: deps run test lint typecheck unit integration e2e chaos bench clean template

$(STAMPS)/apt: $(RUN_APT_LISTS) deploy/install-apt.sh
	@mkdir -p $(STAMPS)
	@bash deploy/install-apt.sh $(RUN_APT_LISTS)
	@touch $@

$(STAMPS)/apt-test: $(APT_LISTS) deploy/install-apt.sh
	@mkdir -p $(STAMPS)
	@bash deploy/install-apt.sh $(APT_LISTS)
	@touch $@

# Every test tier (and the benchmarks) also gets the test, bench, browser and docker packages.
test unit integration e2e chaos bench: $(STAMPS)/apt-test

$(STAMPS)/venv: pyproject.toml $(STAMPS)/apt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

deps: $(STAMPS)/venv
	@$(MAKE) --no-print-directory bpf-if-clang

.PHONY: bpf bpf-if-clang
bpf: ## the l4 mode's connection-ID learning program (clang -target bpf) -> deploy/bpf/build/quic_cid.o
	$(MAKE) -C deploy/bpf

bpf-if-clang:
	@if command -v clang >/dev/null; then $(MAKE) --no-print-directory bpf; \
	else echo "no clang: the l4 mode's connection-ID learning program is not built (apt-get install clang llvm libbpf-dev)"; fi

run: deps ## the whole system on embedded defaults (local NATS, local libvirt)
	$(BIN)/quicfleet up

lint: deps
	$(BIN)/ruff check .

typecheck: deps
	$(BIN)/mypy shared services ops bench tests

unit: deps
	$(BIN)/pytest -m unit tests

integration: deps
	$(BIN)/pytest -m integration tests

e2e: deps
	$(BIN)/pytest -m e2e tests

chaos: deps ## the reliability matrix (short variants; QUICFLEET_CHAOS_LONG=1 for the full ones)
	$(BIN)/pytest -m chaos tests

test: lint typecheck ## ruff, mypy and every test tier
	$(BIN)/pytest tests --durations=25

bench: deps
	$(BIN)/python -m bench

clean:
	rm -rf $(STAMPS) .run .mypy_cache .ruff_cache .pytest_cache

template: deps ## build the Debian test template VM and define it in libvirt
	bash deploy/template/build.sh

.PHONY: install constraints
install: ## a Debian KVM host: run packages, /opt/quicfleet, users, systemd units (as root; docs/operations.md)
	bash deploy/install-host.sh
	@$(MAKE) --no-print-directory bpf-if-clang
	@if [ -f deploy/bpf/build/quic_cid.o ]; then install -D -m 0644 deploy/bpf/build/quic_cid.o /opt/quicfleet/lib/bpf/quic_cid.o; fi

constraints: deps ## re-pin deploy/constraints.txt (the image's and the host install's versions) from the venv
	$(BIN)/python deploy/gen_constraints.py

.PHONY: docs
docs: deps ## regenerate docs/configuration.md from the Settings classes
	$(BIN)/python deploy/gen_config_docs.py
