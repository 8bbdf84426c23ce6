"""The OCPP 1.6J side of cpms: framing (``frames``), schema validation (``schemas``), meter
parsing (``meter``), the message log, and the WebSocket listener (``listener``)."""
