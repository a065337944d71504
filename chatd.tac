"""Run chatd from a .tac file: ``twistd -ny chatd.tac``.

Configured from the environment only (CHATD_LISTEN, CHATD_MAX_CLIENTS, ...;
see README.md), the same settings ``twistd chatd`` takes as options.
"""

from twisted.application import service

from chatd.server.config import fromEnvironment
from chatd.server.service import ChatService, quietStartupErrors

quietStartupErrors()
application = service.Application("chatd")
ChatService(fromEnvironment(), loader=fromEnvironment).setServiceParent(application)
