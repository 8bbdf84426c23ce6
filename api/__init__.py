"""The REST (and later WebSocket) facade the mobile app talks to."""

from api.app import create_app
from api.serve import serve_api

__all__ = ["create_app", "serve_api"]
