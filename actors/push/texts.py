"""What a push notification says, in the language its subscription was made in.

A notification is ``{"type", "title", "body", "data", "tag", "timestamp"}``: the app's service
worker shows ``title`` and ``body`` and keys its logic on ``type`` and ``data`` (never on the
words). ``tag`` lets a newer notification of the same session replace an older one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from actors.push.webpush import MAX_PAYLOAD

#: kind → language → (title, body); ``{name}`` is filled from the notification's data
TEXTS: dict[str, dict[str, tuple[str, str]]] = {
    "charging_started": {
        "en": ("Charging started", "Station {station_id}, connector {connector_id}"),
        "ru": ("Зарядка началась", "Станция {station_id}, разъём {connector_id}"),
        "ky": ("Кубаттоо башталды", "Станция {station_id}, туташтыргыч {connector_id}"),
    },
    "charging_completed": {
        "en": ("Charging completed", "{energy_kwh} kWh for {cost} KGS; {refund} KGS returned"),
        "ru": ("Зарядка завершена", "{energy_kwh} кВт·ч за {cost} сом; возвращено {refund} сом"),
        "ky": ("Кубаттоо аяктады", "{energy_kwh} кВт·с, {cost} сом; {refund} сом кайтарылды"),
    },
    "charging_stopped": {
        "en": (
            "The station stopped charging",
            "{energy_kwh} kWh for {cost} KGS; {refund} KGS returned",
        ),
        "ru": (
            "Станция остановила зарядку",
            "{energy_kwh} кВт·ч за {cost} сом; возвращено {refund} сом",
        ),
        "ky": (
            "Станция кубаттоону токтотту",
            "{energy_kwh} кВт·с, {cost} сом; {refund} сом кайтарылды",
        ),
    },
    "charging_failed": {
        "en": ("Charging did not start", "Station {station_id}: {refund} KGS returned"),
        "ru": ("Зарядка не началась", "Станция {station_id}: возвращено {refund} сом"),
        "ky": ("Кубаттоо башталган жок", "Станция {station_id}: {refund} сом кайтарылды"),
    },
    "low_balance": {
        "en": ("Low balance", "{balance} KGS left: top up to charge again"),
        "ru": ("Мало средств", "Осталось {balance} сом: пополните баланс"),
        "ky": ("Каражат аз", "{balance} сом калды: балансты толуктаңыз"),
    },
    "payment_confirmed": {
        "en": ("Top-up confirmed", "+{amount} KGS, balance {balance} KGS"),
        "ru": ("Пополнение зачислено", "+{amount} сом, баланс {balance} сом"),
        "ky": ("Толуктоо кабыл алынды", "+{amount} сом, баланс {balance} сом"),
    },
    "owner_session_started": {
        "en": ("New session", "Station {station_id}, connector {connector_id}"),
        "ru": ("Новая зарядка", "Станция {station_id}, разъём {connector_id}"),
        "ky": ("Жаңы кубаттоо", "Станция {station_id}, туташтыргыч {connector_id}"),
    },
    "owner_session_completed": {
        "en": ("Session completed", "Station {station_id}: {energy_kwh} kWh, {revenue} KGS"),
        "ru": ("Зарядка завершена", "Станция {station_id}: {energy_kwh} кВт·ч, {revenue} сом"),
        "ky": ("Кубаттоо аяктады", "Станция {station_id}: {energy_kwh} кВт·с, {revenue} сом"),
    },
    "station_offline": {
        "en": ("Station offline", "Station {station_id} is not connected"),
        "ru": ("Станция не в сети", "Станция {station_id} не на связи"),
        "ky": ("Станция тармакта эмес", "Станция {station_id} байланышта эмес"),
    },
    "test": {
        "en": ("cpms", "Notifications work"),
        "ru": ("cpms", "Уведомления работают"),
        "ky": ("cpms", "Билдирмелер иштейт"),
    },
}


class _Blanks(dict[str, Any]):
    """A notification's data for its template: a figure it lacks is left blank."""

    def __missing__(self, key: str) -> str:
        return ""


def render(kind: str, data: dict[str, Any], language: str, tag: str | None = None) -> bytes:
    """The notification as the service worker receives it (UTF-8 JSON, at most
    :data:`~actors.push.webpush.MAX_PAYLOAD` bytes: a long value is cut from ``body``)."""
    texts = TEXTS[kind]
    title, template = texts.get(language, texts["en"])
    body = template.format_map(_Blanks({k: "" if v is None else v for k, v in data.items()}))
    message = {
        "type": kind,
        "title": title,
        "body": body,
        "data": data,
        "tag": tag or kind,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    encoded = json.dumps(message, ensure_ascii=False, default=str).encode()
    if len(encoded) > MAX_PAYLOAD:
        message["body"] = ""
        encoded = json.dumps(message, ensure_ascii=False, default=str).encode()
    return encoded
