"""What the OCPP door costs per frame: parsing (bounded JSON) and checking (the OCPP 1.6 schema,
bounded integers, storable timestamps), for the frames a charger sends most, and for frames it
refuses. Pure CPU, no server; the median of several rounds.

    python bench/ocpp_door.py
    python bench/ocpp_door.py --rounds 9 --frames 20000
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from cpms.ocpp import schemas
from cpms.ocpp.frames import Call, OcppError, parse_frame

NOW = "2026-11-22T10:00:00.000Z"
SAMPLED = [
    {"value": "123456", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
    {"value": "22000", "measurand": "Power.Active.Import", "unit": "W"},
    {"value": "31.7", "measurand": "Current.Import", "unit": "A"},
    {"value": "230", "measurand": "Voltage", "unit": "V"},
    {"value": "64", "measurand": "SoC", "unit": "Percent", "location": "EV"},
]
FRAMES = {
    "Heartbeat": json.dumps([2, "1", "Heartbeat", {}]),
    "MeterValues": json.dumps(
        [
            2,
            "2",
            "MeterValues",
            {
                "connectorId": 1,
                "transactionId": 1234,
                "meterValue": [{"timestamp": NOW, "sampledValue": SAMPLED}],
            },
        ]
    ),
    "StatusNotification": json.dumps(
        [
            2,
            "3",
            "StatusNotification",
            {"connectorId": 1, "errorCode": "NoError", "status": "Charging", "timestamp": NOW},
        ]
    ),
    "refused: 2^63": json.dumps(
        [
            2,
            "4",
            "StartTransaction",
            {"connectorId": 1, "idTag": "T", "meterStart": 2**63, "timestamp": NOW},
        ]
    ),
    "refused: 60k deep": "[" * 60_000 + "]" * 60_000,
}


def door(text: str) -> None:
    try:
        frame = parse_frame(text)
        if isinstance(frame, Call):
            schemas.validate(frame.action, frame.payload, frame.unique_id)
    except OcppError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frames", type=int, default=20_000)
    args = parser.parse_args()
    schemas.warm_up()
    print(f"{'frame':<22}{'µs per frame':>14}")
    for name, text in FRAMES.items():
        count = args.frames if "deep" not in name else max(1, args.frames // 100)
        rounds = []
        for _ in range(args.rounds):
            began = time.perf_counter()
            for _ in range(count):
                door(text)
            rounds.append((time.perf_counter() - began) / count * 1e6)
        print(f"{name:<22}{statistics.median(rounds):>14.2f}")


if __name__ == "__main__":
    main()
