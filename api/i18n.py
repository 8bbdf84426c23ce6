"""Error messages in the caller's language: English, Russian or Kyrgyz, chosen by
``Accept-Language`` (English when it names none of them). Only the ``message`` changes; the
``error`` code, the status and the other fields stay as they are, so an app keys its logic on
the code and shows the message.

A message is written here once per code and language; a code not here keeps its English
message (the operators' admin API among them). ``{field}`` in a message is filled from the
error's own fields (``retry_after``, ``attempts_left``, ``required_amount``, ...).
"""

from __future__ import annotations

import re
from typing import Any, Literal

Language = Literal["en", "ru", "ky"]
LANGUAGES: tuple[Language, ...] = ("en", "ru", "ky")

_RANGE = re.compile(r"^\s*([A-Za-z]{1,8})(?:-[A-Za-z0-9]{1,8})*\s*(?:;\s*q\s*=\s*([0-9.]+))?\s*$")

#: code → (Russian, Kyrgyz)
CATALOG: dict[str, tuple[str, str]] = {
    "invalid_request": ("Некорректный запрос", "Туура эмес суроо"),
    "validation_error": (
        "Проверьте данные запроса: некоторые поля заполнены неверно",
        "Суроонун маалыматтарын текшериңиз: айрым талаалар туура эмес толтурулган",
    ),
    "unauthorized": ("Требуется вход в систему", "Системага кирүү талап кылынат"),
    "invalid_token": (
        "Недействительный токен: войдите заново",
        "Токен жараксыз: кайра кириңиз",
    ),
    "token_expired": ("Срок действия токена истёк", "Токендин мөөнөтү бүттү"),
    "access_denied": ("Доступ запрещён", "Кирүүгө тыюу салынган"),
    "client_mismatch": (
        "client_id не совпадает с владельцем токена",
        "client_id токендин ээсине дал келбейт",
    ),
    "client_blocked": ("Аккаунт заблокирован", "Аккаунт бөгөттөлгөн"),
    "client_pending_deletion": ("Аккаунт удаляется", "Аккаунт өчүрүлүүдө"),
    "client_not_found": ("Клиент не найден", "Кардар табылган жок"),
    "not_found": ("Не найдено", "Табылган жок"),
    "method_not_allowed": ("Метод не поддерживается", "Бул ыкма колдоого алынбайт"),
    "payload_too_large": ("Слишком большой запрос", "Суроо өтө чоң"),
    "internal_error": ("Внутренняя ошибка сервера", "Сервердин ички катасы"),
    "service_unavailable": (
        "Сервис временно недоступен, повторите попытку позже",
        "Кызмат убактылуу жеткиликсиз, бир аздан кийин кайталаңыз",
    ),
    "timeout": (
        "Нет ответа вовремя, повторите попытку позже",
        "Убагында жооп болгон жок, бир аздан кийин кайталаңыз",
    ),
    "rate_limit_exceeded": (
        "Слишком много запросов. Попробуйте через {retry_after} с",
        "Суроо өтө көп. {retry_after} секунддан кийин аракет кылыңыз",
    ),
    "request_in_progress": (
        "Запрос с этим Idempotency-Key ещё выполняется",
        "Бул Idempotency-Key менен суроо дагы эле аткарылууда",
    ),
    "idempotency_conflict": (
        "Этот Idempotency-Key уже использован с другим запросом",
        "Бул Idempotency-Key башка суроо менен колдонулган",
    ),
    "invalid_idempotency_key": (
        "Idempotency-Key: от 1 до 255 видимых символов ASCII",
        "Idempotency-Key: 1ден 255ке чейин көрүнгөн ASCII белгилери",
    ),
    "cors_origin_refused": (
        "Запросы с этого сайта не разрешены",
        "Бул сайттан суроолорго уруксат жок",
    ),
    "insufficient_balance": (
        "Недостаточно средств. Баланс: {current_balance} сом, требуется: {required_amount} сом",
        "Каражат жетишсиз. Баланс: {current_balance} сом, керек: {required_amount} сом",
    ),
    "station_not_found": ("Станция не найдена", "Станция табылган жок"),
    "connector_not_found": ("Разъём не найден", "Туташтыргыч табылган жок"),
    "station_offline": ("Станция не в сети", "Станция тармакта жок"),
    "station_maintenance": ("Станция на обслуживании", "Станция тейлөөдө"),
    "station_unavailable": ("Станция недоступна", "Станция жеткиликсиз"),
    "connector_occupied": ("Разъём занят", "Туташтыргыч бош эмес"),
    "connector_faulted": ("Разъём неисправен", "Туташтыргыч бузук"),
    "session_not_found": ("Сессия зарядки не найдена", "Кубаттоо сеансы табылган жок"),
    "location_not_found": ("Локация не найдена", "Жайгашкан жер табылган жок"),
    "favorite_not_found": ("Этой локации нет в избранном", "Бул жер тандалмаларда жок"),
    "too_many_favorites": ("Слишком много избранных", "Тандалмалар өтө көп"),
    "payment_not_found": ("Платёж не найден", "Төлөм табылган жок"),
    "payment_declined": ("Платёж отклонён", "Төлөм четке кагылды"),
    "payment_unavailable": (
        "Платёжный сервис временно недоступен",
        "Төлөм кызматы убактылуу жеткиликсиз",
    ),
    "card_not_available": ("Оплата картой недоступна", "Карта менен төлөө жеткиликсиз"),
    "card_invalid": ("Неверные данные карты", "Картанын маалыматтары туура эмес"),
    "card_blocked": ("Карта заблокирована", "Карта бөгөттөлгөн"),
    "insufficient_funds": ("Недостаточно средств на карте", "Картада каражат жетишсиз"),
    "invalid_cvv": ("Неверный CVV", "CVV туура эмес"),
    "account_exists": (
        "Аккаунт с этим телефоном или e-mail уже существует",
        "Бул телефон же e-mail менен аккаунт бар",
    ),
    "invalid_credentials": ("Неверный логин или пароль", "Логин же сырсөз туура эмес"),
    "otp_cooldown": (
        "Новый код можно запросить через {retry_after} с",
        "Жаңы кодду {retry_after} секунддан кийин сураса болот",
    ),
    "otp_invalid": (
        "Неверный код. Осталось попыток: {attempts_left}",
        "Код туура эмес. Калган аракеттер: {attempts_left}",
    ),
    "otp_locked": (
        "Слишком много неверных попыток: запросите новый код",
        "Туура эмес аракеттер өтө көп: жаңы код сураңыз",
    ),
    "otp_expired": (
        "Срок действия кода истёк: запросите новый",
        "Коддун мөөнөтү бүттү: жаңысын сураңыз",
    ),
    "otp_not_requested": (
        "Код для этого номера не запрашивался",
        "Бул номер үчүн код суралган эмес",
    ),
    "sms_unavailable": (
        "Не удалось отправить SMS, попробуйте позже",
        "SMS жөнөтүлгөн жок, кийинчерээк аракет кылыңыз",
    ),
    "refresh_token_reused": (
        "Токен уже использован: войдите заново",
        "Токен мурун колдонулган: кайра кириңиз",
    ),
    "refresh_token_revoked": ("Сессия завершена: войдите заново", "Сеанс бүттү: кайра кириңиз"),
    "refresh_token_expired": (
        "Срок сессии истёк: войдите заново",
        "Сеанстын мөөнөтү бүттү: кайра кириңиз",
    ),
    "refresh_token_unknown": ("Неизвестный токен: войдите заново", "Белгисиз токен: кайра кириңиз"),
    "wrong_account_kind": (
        "Это вход владельца станции, а не водителя",
        "Бул станция ээсинин кирүүсү, айдоочунуку эмес",
    ),
    "push_disabled": (
        "Push-уведомления на этом сервере не настроены",
        "Бул серверде push-билдирмелер жөндөлгөн эмес",
    ),
    "push_busy": (
        "Уведомления сейчас перегружены, попробуйте позже",
        "Билдирмелер азыр ашыкча жүктөлгөн, кийинчерээк аракет кылыңыз",
    ),
    "invalid_subscription": (
        "Подписка на уведомления некорректна",
        "Билдирмелерге жазылуу туура эмес",
    ),
    "too_many_subscriptions": (
        "Слишком много подписок: удалите старую",
        "Жазылуулар өтө көп: эскисин өчүрүңүз",
    ),
    "subscription_not_found": ("Подписка не найдена", "Жазылуу табылган жок"),
    "no_subscriptions": (
        "Нет подписок на уведомления: сначала подпишитесь",
        "Билдирмелерге жазылуу жок: адегенде жазылыңыз",
    ),
}


def language(accept: str | None) -> Language:
    """The best of ours in an ``Accept-Language`` header (RFC 9110 §12.5.4), English if none."""
    best: tuple[float, int, Language] = (0.0, 0, "en")
    for position, part in enumerate((accept or "").split(",")[:20]):
        matched = _RANGE.match(part)
        if matched is None:
            continue
        tag = matched.group(1).lower()
        try:
            weight = float(matched.group(2)) if matched.group(2) else 1.0
        except ValueError:
            continue
        if tag in LANGUAGES and weight > best[0]:
            best = (weight, -position, tag)
    return best[2]


def translated(body: dict[str, Any], lang: Language) -> dict[str, Any]:
    """``body`` with its message in ``lang`` when there is one for its code."""
    if lang == "en":
        return body
    texts = CATALOG.get(str(body.get("error")))
    if texts is None:
        return body
    template = texts[0] if lang == "ru" else texts[1]
    return {**body, "message": template.format_map(_Fields(body))}


class _Fields(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"
