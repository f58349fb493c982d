# Archipelago: two commands do everything on a fresh Debian 12 machine.
#   make demo   install missing packages, configure, build, run the main demo
#   make test   install missing packages, configure, build, run the whole test suite
# Variables: BUILD_DIR (default build), JOBS (default: number of cores), CMAKE_ARGS.

BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_ARGS ?=
CTEST_ARGS ?=

.PHONY: all setup configure build demo test bench clean help

all: build

help:
	@echo "make demo   - set up, build and run the demo (3-stage pipeline; kill -9 the frontend, then a middle replica; add one)"
	@echo "make test   - set up, build and run every test (ctest)"
	@echo "make bench  - set up, build and run archi-bench p2p, faults, encode, pipeline (writes docs/bench/)"
	@echo "make clean  - remove $(BUILD_DIR)"

setup:
	@bash scripts/setup.sh

configure: setup
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS) > $(BUILD_DIR).configure.log 2>&1 \
	  || (cat $(BUILD_DIR).configure.log; exit 1)
	@grep -E "^-- (Archipelago|.*not found)" $(BUILD_DIR).configure.log || true

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

demo: build
	@bash scripts/fetch_model.sh $(BUILD_DIR) \
	  || echo "warning: real model (all-MiniLM-L6-v2) not fetched; its tests skip and archi-embed has no model"
	@bash scripts/demo.sh $(BUILD_DIR)

test: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 300 $(CTEST_ARGS)

bench: build
	@bash scripts/bench.sh $(BUILD_DIR)

clean:
	rm -rf $(BUILD_DIR) $(BUILD_DIR).configure.log
