"""``--workers N``: clients spread over worker processes, one total order.

:mod:`chatd.cluster.main` (the main process: admission, the sequencer, the
roster), :mod:`chatd.cluster.worker` (a worker process),
:mod:`chatd.cluster.remote` (a worker's sequencer and roster),
:mod:`chatd.cluster.dispatch` (which worker), :mod:`chatd.cluster.link`
(the messages between them).  Imported only when --workers is above 1.
See docs/workers.md.
"""
