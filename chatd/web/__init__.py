"""chatd in the browser: the page, and chatd frames over a WebSocket."""
