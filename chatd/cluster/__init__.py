"""chatd nodes joined through Redis (``--redis``): one room, one total order.

Imported only when ``--redis`` is given.  :mod:`.options` parses the
options (no Redis client needed); :mod:`.node` is the cluster member that
plugs into the room as its sequencer and roster; :mod:`.scripts` holds the
Lua that makes each step atomic in Redis.  See docs/cluster.md.
"""
