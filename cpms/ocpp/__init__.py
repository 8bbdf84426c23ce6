"""The OCPP 1.6J side of cpms: the WebSocket listener chargers connect to."""

from cpms.ocpp.listener import OCPP_SUBPROTOCOL, serve_ocpp

__all__ = ["OCPP_SUBPROTOCOL", "serve_ocpp"]
