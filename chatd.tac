"""Run chatd from a .tac file: ``twistd -ny chatd.tac``.

Configured from the environment only (CHATD_LISTEN, CHATD_MAX_CLIENTS, ...;
see README.md), the same settings ``twistd chatd`` takes as options.  A bad
setting or a port that cannot be bound ends twistd with one line.
"""

import os

from twisted.application import service
from twisted.python import usage

from chatd.server.config import fromEnvironment
from chatd.server.tap import bindOrExit, buildService, warnUnknownVariables

try:
    config = fromEnvironment()
except usage.UsageError as e:
    raise SystemExit(f"chatd: {e}") from None
warnUnknownVariables(os.environ)
application = service.Application("chatd")
bindOrExit(buildService(config, loader=fromEnvironment)).setServiceParent(application)
