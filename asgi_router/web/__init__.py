"""The ASGI application: the only package that knows about HTTP requests and responses."""

from asgi_router.web.app import App, create_app

__all__ = ["App", "create_app"]
