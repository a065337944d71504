"""``python -m chatd.client``."""

from chatd.client.app import main

main()
