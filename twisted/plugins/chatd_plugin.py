"""Make ``twistd chatd`` available (loaded lazily through chatd.tap)."""

from twisted.application.service import ServiceMaker

chatd = ServiceMaker(
    "chatd",
    "chatd.tap",
    "A chat daemon speaking the chatd framed protocol.",
    "chatd",
)
