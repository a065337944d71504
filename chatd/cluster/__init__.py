"""chatd beyond one process: the same room on many cores and many machines.

Imported only when asked for (by :mod:`chatd.server.tap`).  Each mode is an
:class:`~chatd.server.backend.IBackend` behind the one ChatFactory.

``--workers N`` (docs/workers.md): clients spread over worker processes,
one total order.  The main process: :mod:`.main` (its backend, composed
of:) :mod:`.handoff` (admission and the hand-off of sockets),
:mod:`.dispatch` (which worker, no processes in it), :mod:`.authority` (the
sequencer and the roster), :mod:`.supervisor` (spawn, idle exit, crash
loop, replacement), :mod:`.handle` (one worker's link and its
back-pressure), :mod:`.tally` (status aggregation).  A worker process:
:mod:`.worker`, with :mod:`.remote` (its sequencer and roster) and
:mod:`.logins` (the login back-off, shared through main); both ends speak
:mod:`.link`.

``--redis URL`` (docs/cluster.md): nodes joined through Redis --
:mod:`.options` (the options, no Redis client needed), :mod:`.node` (the
member that is the room's sequencer and roster), composed of
:mod:`.redislink` (the connections, scripts by name), :mod:`.streamseq`
(the stream), :mod:`.leases` (names), :mod:`.membership` (lease, heartbeat,
reaping, recovery), :mod:`.who` (WHO after a gap) and :mod:`.standing` (the
lease as they all see it); :mod:`.redisnode` (its backend), :mod:`.scripts`
(the Lua that makes each step atomic in Redis), :mod:`.redislogins`
(the login back-off, shared through a Redis channel).

It may import :mod:`chatd.wire`, :mod:`chatd.core` and :mod:`chatd.server`;
nothing in :mod:`chatd.server` but the tap imports it.
"""
