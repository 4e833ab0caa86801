# mxknock's benchmarks (issue 5), included from the Makefile. Root: builds network namespaces.
# make bench                          all five, writes bench/results.md (about 5-10 minutes)
# make bench BENCH_ARGS="--quick"     fewer repetitions; add "--only N" for one benchmark
BENCH_ARGS ?=

.PHONY: bench

bench: venv
	$(PY) -m bench.run $(BENCH_ARGS)
