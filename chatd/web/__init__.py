"""chatd in the browser: the page, and chatd frames over a WebSocket.

:mod:`.site` serves the chat page and its WebSocket on twisted.web
(``--web``); :mod:`.websocket` is the front end that carries chatd frames
in binary WebSocket messages to the same session engine as TCP;
:mod:`.options` parses the ``--web`` options (it imports nothing else of
chatd, so the daemon's option list can use it).  The package may import
:mod:`chatd.wire`, :mod:`chatd.core` and :mod:`chatd.server` (the factory
its connections share); nothing in chatd imports it but the composition
root, :mod:`chatd.server.tap`, and the option list.
"""
