"""Model weights from s3://bucket/prefix: downloaded once (moto's HTTP server), then loaded."""

from __future__ import annotations

import boto3
import pytest

from services.worker.loading import load_model
from services.worker.s3_source import download_prefix
from services.worker.settings import WorkerSettings


@pytest.fixture
def model_bucket(aws_environ, moto_endpoint, monkeypatch, demo_model_path):
    """A bucket holding the demo model's files under models/demo/."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="weights")
    for path in demo_model_path.iterdir():
        if path.is_file():
            s3.upload_file(str(path), "weights", f"models/demo/{path.name}")
    return s3


def test_s3_model_is_downloaded_once_and_loads(model_bucket, tmp_path):
    """An s3:// model is mirrored into the cache and loaded by the Auto classes."""
    settings = WorkerSettings(model="s3://weights/models/demo", cache_dir=tmp_path, warmup=False)
    loaded = load_model(settings)
    assert loaded.name == "s3://weights/models/demo"
    assert (tmp_path / "s3" / "weights" / "models" / "demo" / "config.json").exists()
    calls = []
    model_bucket.meta.events.register("before-call.s3.GetObject", lambda **kw: calls.append(kw))
    download_prefix("s3://weights/models/demo", cache_dir=tmp_path / "s3", client=model_bucket)
    assert calls == []  # cached: nothing downloaded again


def test_missing_prefix_is_a_clear_error(model_bucket, tmp_path):
    """An empty or wrong prefix fails with a message naming it."""
    with pytest.raises(FileNotFoundError, match="s3://weights/nothing"):
        download_prefix("s3://weights/nothing", cache_dir=tmp_path, client=model_bucket)


def test_unfetchable_s3_model_is_a_model_load_error(model_bucket, tmp_path):
    """The worker reports a missing s3 model as a ModelLoadError (a plain message, exit 1)."""
    from services.worker.loading import ModelLoadError

    with pytest.raises(ModelLoadError, match="s3://weights/absent"):
        load_model(WorkerSettings(model="s3://weights/absent", cache_dir=tmp_path))


def test_prefetch_puts_an_s3_model_in_the_cache_without_loading_it(model_bucket, tmp_path):
    """A warming GPU host's prefetch mirrors the weights the worker will later load from disk."""
    from services.worker.prefetch import prefetch

    settings = WorkerSettings(model="s3://weights/models/demo", cache_dir=tmp_path)
    where = prefetch(settings)
    assert where == str(tmp_path / "s3" / "weights" / "models" / "demo")
    assert (tmp_path / "s3" / "weights" / "models" / "demo" / ".complete").exists()


def test_prefetch_downloads_a_hub_model_whole(monkeypatch, tmp_path):
    """A hub id is fetched whole (snapshot_download) into the cache, not just its tokenizer."""
    import huggingface_hub

    from services.worker.prefetch import prefetch

    asked = []
    monkeypatch.setattr(
        huggingface_hub, "snapshot_download", lambda repo_id: asked.append(repo_id) or "/snap"
    )
    settings = WorkerSettings(env="dev", model="org/some-model", cache_dir=tmp_path)
    assert prefetch(settings) == "/snap"
    assert asked == ["org/some-model"]
