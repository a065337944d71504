"""chatd-bench: the stress and benchmark client (see docs/benchmarks.md).

A client of the wire protocol only, so that it measures any server that
speaks it (chatd in every mode, bench/naive_server.py).  Modules:

- command line: ``cli`` (the console script: the run's phases, signals,
  exit status), ``options`` (argparse, checked values -> ``Config``),
  ``report`` (header, summary, interrupted line), ``progress`` (the live
  line on stderr), ``errors`` (``BenchError``, exit statuses, one-line
  setup failures);
- processes: ``parts`` (``IPart``: a ``LoadPart`` here, or one in a worker
  process driven over a pipe), ``config`` (``Config``, JSON for workers);
- the load: ``load`` (``LoadPart``: one process's connections, phase by
  phase), ``connect`` (setup: connect, wait for ACTIVE, count failures),
  ``conn`` (what every connection shares), ``echo`` and ``fanout`` (the two
  kinds of connection);
- checking, free of sockets: ``checks`` (generators, byte and sequence
  checkers, latency histogram), ``order`` (the total-order check),
  ``figures`` (one part's counts, and how the parts add up).

It may import chatd.wire and shared helpers (chatd.netutil,
chatd.secretfile), never chatd.server, chatd.core or chatd.cluster: a
benchmark that shares the server's code could share its bugs, and would
need the server installed.  tests/test_bench_imports.py enforces this.
"""
