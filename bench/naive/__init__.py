"""The naive comparator: what a user builds instead of idmirror. A FastAPI app whose
`PUT /v1/internal/users/{user_id}` and `PUT /v1/internal/agents/{slug}@{user_slug}` validate the
body with idmirror's own models and run one synchronous upsert per request on a pooled SQLAlchemy
engine, in FastAPI's threadpool: no ledger, no ordering, no queue.

`tables` defines its two tables (in the benchmark's database, beside idmirror's), `statements`
its two upserts, `app` the routes; `python -m bench.naive` serves it under uvicorn as
`idmirror api` serves the API, and `server` starts it beside a benchmark's stack.
"""
