"""Model weights from ``s3://bucket/prefix``: downloaded once into a local cache."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from services.protocol.aws import aws_client

log = logging.getLogger("tinyllama.worker.s3")


def cache_path(url: str, *, cache_dir: Path) -> Path:
    """The local folder an S3 prefix is mirrored into."""
    parsed = urlparse(url)
    return cache_dir / parsed.netloc / parsed.path.strip("/")


def download_prefix(url: str, *, cache_dir: Path, client: object | None = None) -> Path:
    """Mirror every object under the prefix once (atomically), logging progress."""
    target = cache_path(url, cache_dir=cache_dir)
    if (target / ".complete").exists():
        return target
    s3 = client or aws_client("s3")
    parsed = urlparse(url)
    bucket, prefix = parsed.netloc, parsed.path.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    objects = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        objects.extend(page.get("Contents", []))
    if not objects:
        raise FileNotFoundError(f"no objects under {url}")
    total = sum(o["Size"] for o in objects)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".s3-", dir=target.parent))
    done = 0
    try:
        for obj in objects:
            relative = obj["Key"][len(prefix) :]
            if not relative or relative.endswith("/"):
                continue
            dest = staging / relative
            dest.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(dest))
            done += obj["Size"]
            log.info("downloaded %s (%.0f%%)", relative, 100 * done / max(total, 1))
        (staging / ".complete").write_text(url + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
