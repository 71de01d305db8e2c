# Quick start:  make demo   (set up, then segment a real CT with the shipped reference model)
#               make test   (set up, lint and type-check, then run the whole test suite)
# Setup is idempotent: a virtual environment in .venv, torch pinned by constraints.txt.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.liverseg-installed

.PHONY: setup system-packages demo demo-synthetic lint test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	# The sample CT of liverseg-quickstart (LiTS volume 117, MIT licence). --no-deps: its declared
	# dependencies are ancient pins and only its two data files are used.
	$(PY) -m pip install --quiet --no-deps liver-ct-segmentation-package==1.6.0
	touch $(STAMP)

# The Debian packages some tests drive for real (scripts/system-packages.sh lists them); the test setup only.
system-packages:
	bash scripts/system-packages.sh

demo: setup
	$(VENV)/bin/liverseg-quickstart

# The whole pipeline on synthetic CT: data, split, EDA, train, evaluate, export, infer, bench.
demo-synthetic: setup
	$(VENV)/bin/liverseg-demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The CPU classes of the CI machines, simulated through LIVERSEG_CPU_FLAGS (docs/architecture.md, "Simulating another CPU"):
# AVX2 only (AMD Zen 3), AVX-512 VNNI, AVX-512 VNNI + BF16 (AMD Zen 4), AMX (Intel Xeon), and none of them.
SIMULATED_CPUS := avx2,fma \
	avx2,fma,avx512f,avx512_vnni \
	avx2,fma,avx512f,avx512_vnni,avx512_bf16 \
	avx2,fma,avx512f,avx512_vnni,avx512_bf16,amx_tile,amx_int8,amx_bf16 \
	none

# The whole suite on this CPU, then the tests marked cpu_class (the engine choice and the benchmark rows
# that follow it) once per simulated class, so one machine's CI covers every branch of the choice.
test: lint system-packages
	$(PY) -m pytest
	for flags in $(SIMULATED_CPUS); do \
		echo "== LIVERSEG_CPU_FLAGS=$$flags: pytest -m cpu_class"; \
		LIVERSEG_CPU_FLAGS=$$flags $(PY) -m pytest -q -m cpu_class || exit 1; \
	done

clean:
	rm -rf $(VENV) build dist *.egg-info
