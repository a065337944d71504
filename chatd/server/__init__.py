"""The daemon: the binary front end, the service and its operations.

What lives here, one idea per module: the one factory every connection of a
process shares (:mod:`.factory`) and the modes it is composed with
(:mod:`.backend`: the interface, its typed status report and the one-process
backend); the binary front end (:mod:`.protocol`); admission and abuse limits
(:mod:`.admission`); the options (:mod:`.config`, :mod:`.values`,
:mod:`.endpointcheck`); the service (:mod:`.service`) with its listeners
(:mod:`.listeners`), lifecycle states (:mod:`.states`), reload
(:mod:`.reload`), graceful stop (:mod:`.shutdown`) and port file
(:mod:`.portfile`); the admin interface (:mod:`.admin`, :mod:`.adminhttp`,
:mod:`.metrics`); and the twistd plugin's body (:mod:`.tap`).

It may import :mod:`chatd.wire` and :mod:`chatd.core`, and
:mod:`chatd.web.options` (the web front end's option parsers).  It never
imports :mod:`chatd.cluster` or the web site, with one exception:
:mod:`.tap`, the composition root, which picks the mode's factory and the
HTTP sites (lazily, only when asked for) and gives them to the service.
tests/test_imports.py checks that there are no import circles.
"""
