"""cpms: an actor-based charge-point management system (OCPP 1.6J, prepaid wallet, REST)."""

__version__ = "0.1.0"
