"""chatd beyond one process: the same room on many cores and many machines.

Imported only when asked for.  ``--workers N`` (docs/workers.md): clients
spread over worker processes, one total order -- :mod:`.main` (the main
process: admission, the sequencer, the roster), :mod:`.worker` (a worker
process), :mod:`.remote` (a worker's sequencer and roster), :mod:`.dispatch`
(which worker), :mod:`.link` (the messages between them).  ``--redis URL``
(docs/cluster.md): nodes joined through Redis -- :mod:`.options` (the
options, no Redis client needed), :mod:`.node` (the member that plugs into
the room as its sequencer and roster), :mod:`.scripts` (the Lua that makes
each step atomic in Redis).
"""
