# Two commands do everything on a fresh machine: `make run` and `make test`.
PY := .venv/bin/python
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0

.PHONY: setup run test lint world clean

setup:
	@bash scripts/setup.sh

# The main job: online Flow-DPO on a local Ray cluster in the moving-shapes world (see README).
run: setup
	$(PY) jobs/online_dpo.py --out runs/online_dpo

test: setup
	$(PY) -m pytest -q tests

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

world: setup
	$(PY) jobs/world_report.py

clean:
	rm -rf runs .pytest_cache
