# Two commands do everything on a fresh machine: `make run` and `make test`.
PY := .venv/bin/python
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0

.PHONY: setup run test world clean

setup:
	@bash scripts/setup.sh

# The main job: the most complete pipeline that exists so far (see README).
run: setup
	$(PY) jobs/make_dataset.py --pairs 500 --out runs/demo_dataset
	$(PY) jobs/world_report.py --dataset runs/demo_dataset --out runs/demo_dataset/world_report.json

test: setup
	$(PY) -m pytest -q tests

world: setup
	$(PY) jobs/world_report.py

clean:
	rm -rf runs .pytest_cache
