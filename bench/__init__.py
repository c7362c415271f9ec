"""Load benchmark for the blog service (`make bench`, `make soak`).

Modules: `seed` (data set), `bare_server` (no-database baseline), `grpcframe` + `h2load`
(C load generator), `pyclient` (checking Python client), `metrics` (server status codes),
`procstat` (CPU and RSS, with psutil), `scenarios`, `report` (ghz-style output),
`__main__` (one full run), `soak` (long mixed run).
"""
