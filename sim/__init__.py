"""The bundled simulator: virtual OCPP 1.6J charge points, drivers, scenarios, load reports."""
