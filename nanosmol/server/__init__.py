"""`nanosmol serve`: an OpenAI-compatible HTTP server with a streaming web chat.

Built on nanosmol's public API (`nanosmol.load`, `Model.chat`, `Model.generate`); needs the
`serve` extra: pip install 'nanosmol[serve]'.
"""

from __future__ import annotations

REQUIRED = ("starlette", "uvicorn", "pydantic", "markdown_it")


def missing_dependency() -> str | None:
    """The first server package that is not installed, or None."""
    import importlib.util

    return next((name for name in REQUIRED if importlib.util.find_spec(name) is None), None)


def serve(model, host: str = "127.0.0.1", port: int = 8080, **settings) -> None:
    """Serve a loaded Model until interrupted (settings: see nanosmol.server.app.Settings)."""
    import logging

    import uvicorn

    from nanosmol.server.app import Settings, create_app

    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    app = create_app(model, Settings(**settings))

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            app.state.server.queue.close()  # generations end now: their streams close within the grace period
            super().handle_exit(sig, frame)

    Server(uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=3)).run()
