"""mxknock benchmarks (issue 5); `python -m bench.run --help`."""
