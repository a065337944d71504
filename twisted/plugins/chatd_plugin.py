"""Make ``twistd chatd`` available (loaded lazily through chatd.server.tap)."""

from twisted.application.service import ServiceMaker

chatd = ServiceMaker(
    "chatd",
    "chatd.server.tap",
    "A chat daemon speaking the chatd framed protocol.",
    "chatd",
)
