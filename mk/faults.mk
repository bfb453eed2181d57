# The fault-injection suite (included by the root Makefile; `make test` runs it too).
#   make faults                     every scenario against a local stack with its own broker
#   make faults PYTEST_ARGS='-k flood'
# Logs in artifacts/logs-faults/, the table of scenarios in artifacts/faults.md.

.PHONY: faults
faults: ## Fault injection against the real local stack (kills, outages, floods, hostile input)
	$(UV) run pytest tests/faults $(PYTEST_ARGS)
