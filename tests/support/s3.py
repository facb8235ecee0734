"""A real S3-API server process on loopback for the fleet suite: moto's standalone server (fake AWS,
in memory), since no MinIO binary can be installed here. The service talks to it over HTTP with
boto3 exactly as it would to MinIO, R2 or AWS S3."""
from __future__ import annotations

import sys
import urllib.request

from tests.support.stack import Proc, free_port, wait_for

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "fleet-test-key", "AWS_SECRET_ACCESS_KEY": "fleet-test-secret"}


class S3Server:
    def __init__(self, log_dir, env: dict):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = Proc("s3-server", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                         env, log_dir)

        def up() -> bool:
            with urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=2) as resp:
                return resp.status == 200
        wait_for(up, 60, "moto S3 server", [self.proc])

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    def create_bucket(self, name: str) -> dict:
        """The bucket, and the environment that points the service at it (settings.media_storage)."""
        self.client().create_bucket(Bucket=name)
        return {"S3_BUCKET": name, "S3_ENDPOINT_URL": self.endpoint, "S3_REGION": "us-east-1", **CREDENTIALS}

    def keys(self, bucket: str) -> dict:
        """{key: size} of every object in the bucket."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return {obj["Key"]: obj["Size"] for page in pages for obj in page.get("Contents", [])}

    def stop(self) -> None:
        self.proc.stop(grace=5)
