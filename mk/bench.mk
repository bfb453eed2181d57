# The benchmark (included by the root Makefile; not part of `make test`).
#   make bench                         the system, its peers and baselines, 10-15 minutes
#   make bench BENCH_ARGS=--quick      a smaller run, to try it out (2-4 minutes)
#   make bench BENCH_ARGS=--profile    also record the api and workers with py-spy (artifacts/bench-profiles)
# Results in bench/results.json and bench/results.md; process logs in artifacts/logs-bench/.

BENCH_ARGS ?=

.PHONY: bench
bench: install ## Benchmark against Celery peers and baselines on private servers (bench/results.md; fails on a missed target)
	$(UV) run python -m bench $(BENCH_ARGS)
