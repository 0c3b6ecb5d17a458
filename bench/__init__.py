"""Benchmarks of the service, run by `make bench` (`python -m bench [name ...]`).

Each benchmark starts the services it needs (embedded Postgres and Redis unless
IDMIRROR_DATABASE_URL / IDMIRROR_REDIS_URL are set; `stack.Stack` adds the API, a worker and beat
as subprocesses), sends requests to 127.0.0.1 only, and rewrites its own section of
docs/benchmarks.md (`report.write_section`). `load` is the HTTP load generator, `probe` samples
CPU, Postgres and Redis while a benchmark runs and describes the machine.
"""
