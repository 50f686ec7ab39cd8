# Two entry points that work on a fresh machine: `make demo` and `make test`.
# Both create the virtual environment and install katparallel on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Open MPI refuses to run as root without these (CI machines run as root),
# and needs oversubscription for `mpiexec -n 3` on two cores.
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1
export PRTE_ALLOW_RUN_AS_ROOT := 1
export PRTE_ALLOW_RUN_AS_ROOT_CONFIRM := 1
export PRTE_MCA_rmaps_default_mapping_policy := :oversubscribe

.PHONY: demo test bench install slurm clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[mpi,cluster,uq,test]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) examples/mirror_transmission_sweep.py --backend multiprocessing --workers 2 --out out
	$(PY) examples/laser_power_jitter.py --backend multiprocessing --workers 2 --out out
	$(PY) examples/aligo_tolerance.py --draws 500 --locked 8 --out out
	$(PY) examples/aligo_sobol.py --n 64 --out out
	$(PY) examples/aligo_yield.py --draws 1000
	$(PY) examples/robust_mode_matching.py
	$(PY) examples/aligo_sensitivity.py --draws 64 --out out

# The tests marked `slurm` run on a real one-node Slurm that their fixture starts;
# as root this installs Debian's packages for it when `sinfo` is missing.
slurm:
	tests/cluster/slurm.sh install

test: $(VENV)/.installed slurm
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	mkdir -p out
	$(PY) benchmarks/compare_backends.py --repeat 2 --json out/compare_backends.json --png out/compare_backends.png
	$(PY) benchmarks/memory_million.py
	$(PY) benchmarks/aligo_costs.py --json out/aligo_costs.json
	$(PY) benchmarks/aligo_sobol.py --json out/aligo_sobol.json

clean:
	rm -rf $(VENV) out
