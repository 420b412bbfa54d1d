"""The baseline: a plain boto3 loop probing the way the seed article's script does (one client per
region built once, one GetItem per table after another, then a sleep until the next round).

Usage: boto3_loop.py SECONDS INTERVAL TABLES REGION=ENDPOINT [REGION=ENDPOINT ...]
Prints one JSON line: probes, failures, cpu_seconds, peak_rss_bytes, slots_missed.
"""
import json
import resource
import sys
import time

import boto3


def main():
    seconds, interval, tables = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    regions = [a.split("=", 1) for a in sys.argv[4:]]
    clients = [
        boto3.client(
            "dynamodb",
            region_name=name,
            endpoint_url=endpoint,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        for name, endpoint in regions
    ]
    names = [f"bench_{i:02d}" for i in range(tables)]
    probes = failures = missed = 0
    start = time.monotonic()
    next_round = start
    while time.monotonic() - start < seconds:
        for client in clients:
            for table in names:
                probes += 1
                try:
                    out = client.get_item(
                        TableName=table,
                        Key={"pk": {"S": "dynamo-failover-health"}},
                        ConsistentRead=True,
                    )
                    if "Item" not in out:
                        failures += 1
                except Exception:  # the seed treats every error as a failed check
                    failures += 1
        next_round += interval
        now = time.monotonic()
        while next_round <= now:
            missed += 1
            next_round += interval
        time.sleep(max(0.0, next_round - time.monotonic()))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "probes": probes,
        "failures": failures,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "slots_missed": missed,
    }))


if __name__ == "__main__":
    main()
