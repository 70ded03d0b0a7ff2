"""Monthly AWS cost per million registered accounts, from the counted requests and capacity units times
published on-demand prices. Only request-driven charges: storage, KMS, logs and free tiers are left
out (they are the same for both designs or small), and every assumption is returned with the figures.
"""

from __future__ import annotations

from typing import Any

# us-east-1, on-demand, as published on the AWS pricing pages; DynamoDB's after the 50 % on-demand
# price cut of 1 Nov 2024 (checked 2026 through the search tool against a July 2025 summary).
PRICES = {
    "source": "AWS public pricing pages, us-east-1, on-demand; DynamoDB after the Nov 2024 on-demand cut",
    "asOf": "2025-07 (DynamoDB, confirmed via search); Lambda, SQS, S3, Secrets Manager from AWS pricing "
    "pages as known in 2025",
    "dynamodbWritePerMillionWRU": 0.625,
    "dynamodbReadPerMillionRRU": 0.125,
    "sqsPerMillionRequests": 0.40,
    "lambdaArmPerGBSecond": 0.0000133334,
    "lambdaPerMillionRequests": 0.20,
    "secretsManagerPer10kCalls": 0.05,
    "s3ListOrPostPer1k": 0.005,  # LIST, and DeleteObjects (a POST), priced as PUT/COPY/POST/LIST
    "s3GetPer1k": 0.0004,
    "s3DeleteFree": True,
}
CYCLES_PER_MONTH = 30.4375 / 7  # the default 7-day cycle
LAMBDA_GB = 0.5  # MemorySize 512 in the template's Globals
DDB_LATENCY = 0.010  # seconds per DynamoDB / S3 / SQS call, for Lambda duration (assumption)
S3_LATENCY = 0.020


def _usd(value: float) -> float:
    return round(value, 4)


def _ddb(read_units: float, write_units: float) -> float:
    return (read_units * PRICES["dynamodbReadPerMillionRRU"] + write_units * PRICES["dynamodbWritePerMillionWRU"]) / 1e6


def _lambda(invocations: float, seconds: float) -> float:
    return invocations * PRICES["lambdaPerMillionRequests"] / 1e6 + seconds * LAMBDA_GB * PRICES["lambdaArmPerGBSecond"]


def reporting(scale: dict[str, Any], naive: dict[str, Any], naive_accounts: int,
              atlassian_latency: float, ticks_per_cycle: int) -> dict[str, Any]:
    """Ours from the 1M scale run (one cycle); the naive one from its measured run, scaled linearly."""
    steady = scale["steady"]
    factor = 1_000_000 / scale["accounts"]
    tally = steady["tally"]
    ours_seconds = steady["modelledCycleSeconds"]
    ours = {
        "dynamodb": _ddb(tally["readUnits"], tally["writeUnits"]) * factor,
        "sqs": sum(n for k, n in tally["calls"].items() if k.startswith("sqs:")) * factor
        * PRICES["sqsPerMillionRequests"] / 1e6,
        # Each 15-minute tick is one invocation; both secrets are re-read (the 300 s cache has expired).
        "secretsManager": ticks_per_cycle * 2 * PRICES["secretsManagerPer10kCalls"] / 1e4,
        "lambda": _lambda(ticks_per_cycle, ours_seconds * factor),
    }
    n = naive_accounts
    naive_tally = naive["tally"]
    naive_factor = 1_000_000 / n
    naive_seconds = (naive["requests"] * atlassian_latency
                     + naive_tally["dynamodbReads"] * DDB_LATENCY + naive_tally["dynamodbWrites"] * DDB_LATENCY
                     + naive_tally["calls"].get("sqs:SendMessage", 0) * DDB_LATENCY) * naive_factor
    naive_cost = {
        "dynamodb": _ddb(naive_tally["readUnits"], naive_tally["writeUnits"]) * naive_factor,
        "sqs": sum(v for k, v in naive_tally["calls"].items() if k.startswith("sqs:")) * naive_factor
        * PRICES["sqsPerMillionRequests"] / 1e6,
        "secretsManager": 2 * PRICES["secretsManagerPer10kCalls"] / 1e4,
        # One long job per cycle; it would need splitting to fit 900 s, which is not charged here.
        "lambda": _lambda(1, naive_seconds),
    }
    return {
        "oursPerMonth": {k: _usd(v * CYCLES_PER_MONTH) for k, v in ours.items()}
        | {"total": _usd(sum(ours.values()) * CYCLES_PER_MONTH)},
        "naivePerMonth": {k: _usd(v * CYCLES_PER_MONTH) for k, v in naive_cost.items()}
        | {"total": _usd(sum(naive_cost.values()) * CYCLES_PER_MONTH)},
        "atlassianRequestsPerMonth": {
            "ours": round(steady["requests"] * factor * CYCLES_PER_MONTH),
            "naive": round(naive["requests"] * naive_factor * CYCLES_PER_MONTH),
        },
    }


def _erasure_cost(row: dict[str, Any], sqs_requests_per_account: float, accounts: float,
                  per_invocation: int) -> dict[str, float]:
    calls = row["tally"]["calls"]
    n = row["accounts"]
    s3_list_post = sum(v for k, v in calls.items() if k in ("s3:ListObjectVersions", "s3:ListObjectsV2",
                                                            "s3:DeleteObjects"))
    s3_get = sum(v for k, v in calls.items() if k in ("s3:HeadObject", "s3:GetObject"))
    secrets = sum(v for k, v in calls.items() if k.startswith("secretsmanager:"))
    ddb_calls = sum(v for k, v in calls.items() if k.startswith("dynamodb:"))
    s3_calls = sum(v for k, v in calls.items() if k.startswith("s3:"))
    waiting = (ddb_calls * DDB_LATENCY + s3_calls * S3_LATENCY) / n
    seconds_per_account = row["cpuMillisecondsPerAccount"] / 1000 + waiting
    return {
        "dynamodb": _ddb(row["tally"]["readUnits"], row["tally"]["writeUnits"]) / n * accounts,
        "s3": (s3_list_post * PRICES["s3ListOrPostPer1k"] + s3_get * PRICES["s3GetPer1k"]) / 1000 / n * accounts,
        "sqs": sqs_requests_per_account * accounts * PRICES["sqsPerMillionRequests"] / 1e6,
        "secretsManager": secrets / n * accounts * PRICES["secretsManagerPer10kCalls"] / 1e4,
        "lambda": _lambda(accounts / per_invocation, seconds_per_account * accounts),
    }


def erasure(result: dict[str, Any], fraction: float = 0.01) -> dict[str, Any]:
    accounts = 1_000_000 * fraction
    ours_row = {**result["ours"], "accounts": result["accounts"]}
    naive_row = {**result["naive"], "accounts": result["accounts"]}
    # Ours: sent 10 per SendMessageBatch, received 10 per poll, deleted 10 per DeleteMessageBatch.
    ours = _erasure_cost(ours_row, 0.3, accounts, 10)
    # Naive: one SendMessage, one ReceiveMessage and one DeleteMessage per account, one per invocation.
    naive = _erasure_cost(naive_row, 3.0, accounts, 1)
    return {
        "accountsErasedPerMonth": int(accounts),
        "oursPerMonth": {k: _usd(v) for k, v in ours.items()} | {"total": _usd(sum(ours.values()))},
        "naivePerMonth": {k: _usd(v) for k, v in naive.items()} | {"total": _usd(sum(naive.values()))},
    }


def assumptions(latency: dict[str, float]) -> list[str]:
    return [
        f"cycle 7 days ({CYCLES_PER_MONTH:.3f} cycles per month), 15-minute ticks, Lambda arm64 512 MB",
        f"Lambda duration modelled: Atlassian request {latency['atlassian']} s, DynamoDB call "
        f"{latency['dynamodb']} s, SQS call {latency['sqs']} s; erasure: measured CPU + {DDB_LATENCY} s per "
        f"DynamoDB call + {S3_LATENCY} s per S3 call",
        "capacity units from item sizes (DynamoDB sizing rules); free tiers, storage, KMS, CloudWatch excluded",
        "naive reporter scaled linearly from its measured run; S3 DeleteObjects priced as a POST",
    ]
