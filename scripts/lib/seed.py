"""Creates the demo tables and their health items in one stand-in region (a moto server).

Usage: seed.py ENDPOINT REGION TABLE [TABLE ...]
"""
import sys

import boto3


def main() -> None:
    endpoint, region, tables = sys.argv[1], sys.argv[2], sys.argv[3:]
    db = boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="demo",
        aws_secret_access_key="demo",
    )
    existing = set(db.list_tables()["TableNames"])
    for table in tables:
        if table not in existing:
            db.create_table(
                TableName=table,
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                BillingMode="PAY_PER_REQUEST",
            )
        db.put_item(
            TableName=table,
            Item={"pk": {"S": "dynamo-failover-health"}, "note": {"S": "read by the probes"}},
        )


if __name__ == "__main__":
    main()
