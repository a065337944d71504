"""Make ``twistd chatd`` available (loaded lazily through chatd.server.tap)."""

from twisted.application.service import ServiceMaker

from chatd import __version__

chatd = ServiceMaker(
    "chatd",
    "chatd.server.tap",
    f"A chat daemon speaking the chatd framed protocol (chatd {__version__}).",
    "chatd",
)
