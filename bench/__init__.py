"""The benchmarks. Run each from the repository root as a module, e.g. `python -m bench.bench_live`,
so that `generator`, `videoservice` and `tests.support` import without any path set-up."""
