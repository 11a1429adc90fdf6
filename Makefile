# Set-up, demo, tests and checks. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
# The CPU wheels; for a GPU, e.g. `make setup TORCH_INDEX=https://download.pytorch.org/whl/cu128`.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP := build/.installed
SOURCES := setup.py pyproject.toml $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh')

.PHONY: setup demo test test-fast ctest nvcc-check bench lint clean

setup: $(STAMP)

# torch first, from TORCH_INDEX: a bare `torch` requirement would pull several GB of CUDA wheels.
$(STAMP): $(SOURCES)
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "torch==$(TORCH_VERSION)" --index-url $(TORCH_INDEX)
	$(PYTHON) -m pip install setuptools wheel ninja pybind11
	MAX_JOBS=$${MAX_JOBS:-2} $(PYTHON) -m pip install --no-build-isolation -e ".[test,bench]"
	@mkdir -p build && touch $(STAMP)

demo: setup
	$(PYTHON) -m acsleuth demo

test: setup
	$(PYTHON) -m pytest -q

test-fast: setup
	$(PYTHON) -m pytest -q -m "not slow"

ctest:
	bash tools/ctest.sh

nvcc-check:
	bash tools/check_nvcc.sh

bench: setup
	$(PYTHON) -m pytest benchmarks/bench_ops.py --benchmark-enable -q
	$(PYTHON) benchmarks/ops_table.py

lint:
	$(PYTHON) -m ruff check acsleuth tests benchmarks setup.py

clean:
	rm -rf build acsleuth/_C*.so *.egg-info
