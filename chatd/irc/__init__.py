"""chatd for IRC clients (``--irc ENDPOINT``): irssi, WeeChat, HexChat, ii
or a bot join chatd's rooms as channels, beside every other front end.

:mod:`.protocol` turns IRC lines into the session's semantic inputs (the
session engine of every front end: no second set of rules), :mod:`.codec`
spells the session's outputs as IRC lines and numerics, and :mod:`.site`
makes the listener's factory.  It may import :mod:`chatd.wire`,
:mod:`chatd.core` and :mod:`chatd.server`; nothing imports it but the
service, by name, when ``--irc`` is set (docs/irc.md).
"""
