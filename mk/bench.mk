# The benchmark (included by the root Makefile; not part of `make test`).
#   make bench                         baselines and the system, about 5 minutes
#   make bench BENCH_ARGS=--quick      a smaller run, to try it out
#   make bench BENCH_ARGS=--profile    also record the api with py-spy (artifacts/bench-profiles)
# Results in bench/results.json and bench/results.md; process logs in artifacts/logs-bench/.

BENCH_ARGS ?=

.PHONY: bench
bench: install ## Benchmark against baselines on a private RabbitMQ (bench/results.md; fails on a missed target)
	$(UV) run python -m bench $(BENCH_ARGS)
