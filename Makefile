# Set-up, demo, tests and checks. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
# Empty: torch from pip's configured index. Set it to PyTorch's CPU or CUDA wheel index to pick a
# build (on PyPI, Linux `torch` is the CUDA build, several GB).
TORCH_INDEX ?=
STAMP := build/.installed
SOURCES := setup.py pyproject.toml $(shell find csrc -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh')

.PHONY: setup demo test test-fast ctest nvcc-check bench lint clean

setup: $(STAMP)

# torch first, pinned and from TORCH_INDEX when set: pip would otherwise resolve `torch>=2.3`
# from the package's requirements on its own.
$(STAMP): $(SOURCES)
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
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

lint: setup
	$(PYTHON) -m ruff check acsleuth tests benchmarks setup.py
	$(PYTHON) -m ruff format --check acsleuth tests benchmarks setup.py

clean:
	rm -rf build acsleuth/_C*.so *.egg-info
