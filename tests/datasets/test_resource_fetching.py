"""The fetch machinery on a made-up resource: URLs and fallbacks, the mirror, verification,
atomic writes, the data root and cache names."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from dataset_fakes import ORIGINAL_OPEN_URL, InterruptedStream, sha256_of, write_mirror

from bench.errors import UserError
from datasets import _resources as res

PAYLOAD = b"the quick brown fox\n" * 5000  # 100 kB
OTHER = b"something else entirely\n"
PRIMARY = "http://primary.example/files/blob.txt"
FALLBACK = "https://fallback.example/mirror/blob.txt"


def blob_resource(urls=(PRIMARY, FALLBACK), payload=PAYLOAD) -> res.Resource:
    source = res.Source("blob.txt", tuple(urls), sha256_of(payload), len(payload), "raw")
    return res.Resource("blob.txt", "things", (source,))


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_download_is_verified_and_stored(data_root, fake_web):
    fake_web.pages[PRIMARY] = PAYLOAD
    [located] = res.ensure_resources(data_root, [blob_resource()], "things")
    assert located.path == data_root / "things" / "blob.txt"
    assert located.path.read_bytes() == PAYLOAD
    assert fake_web.requested == [PRIMARY]
    assert leftovers(data_root / "things") == ["blob.txt"]


def test_verified_file_is_not_downloaded_again(data_root, fake_web):
    fake_web.pages[PRIMARY] = PAYLOAD
    res.ensure_resources(data_root, [blob_resource()], "things")
    res.ensure_resources(data_root, [blob_resource()], "things")
    assert fake_web.requested == [PRIMARY]


def test_fallback_url_used_when_primary_unreachable(data_root, fake_web):
    fake_web.pages[FALLBACK] = PAYLOAD
    [located] = res.ensure_resources(data_root, [blob_resource()], "things")
    assert located.path.read_bytes() == PAYLOAD
    assert fake_web.requested == [PRIMARY, FALLBACK]


def test_fallback_url_used_when_primary_serves_wrong_bytes(data_root, fake_web):
    fake_web.pages[PRIMARY] = OTHER
    fake_web.pages[FALLBACK] = PAYLOAD
    [located] = res.ensure_resources(data_root, [blob_resource()], "things")
    assert located.path.read_bytes() == PAYLOAD
    assert leftovers(data_root / "things") == ["blob.txt"]


def test_gz_url_is_gunzipped_and_verified_uncompressed(data_root, fake_web):
    url = "http://primary.example/files/blob.txt.gz"
    fake_web.pages[url] = gzip.compress(PAYLOAD)
    [located] = res.ensure_resources(data_root, [blob_resource(urls=(url,))], "things")
    assert located.path.read_bytes() == PAYLOAD


def test_truncated_gzip_download_is_rejected(data_root, fake_web):
    url = "http://primary.example/files/blob.txt.gz"
    fake_web.pages[url] = gzip.compress(PAYLOAD)[:-40]
    with pytest.raises(res.DataNotFoundError, match="not a complete gzip file"):
        res.ensure_resources(data_root, [blob_resource(urls=(url,))], "things")
    assert leftovers(data_root / "things") == []


@pytest.fixture
def small_chunks(monkeypatch):
    # Several chunks reach the temporary file before an interruption.
    monkeypatch.setattr(res, "CHUNK_BYTES", 4096)


def test_connection_dropped_midway_leaves_no_file_and_falls_back(data_root, fake_web,
                                                                 small_chunks):
    streams = []

    def dropping():
        streams.append(InterruptedStream(PAYLOAD, len(PAYLOAD) // 2,
                                         ConnectionResetError("reset by peer")))
        return streams[-1]

    fake_web.pages[PRIMARY] = dropping
    with pytest.raises(res.DataNotFoundError, match="reset by peer"):
        res.ensure_resources(data_root, [blob_resource(urls=(PRIMARY,))], "things")
    assert streams[0].delivered == len(PAYLOAD) // 2
    assert leftovers(data_root / "things") == []

    fake_web.pages[FALLBACK] = PAYLOAD
    [located] = res.ensure_resources(data_root, [blob_resource()], "things")
    assert located.path.read_bytes() == PAYLOAD


def test_interrupted_download_leaves_nothing_that_passes(data_root, fake_web, small_chunks):
    # Ctrl-C halfway through: the exception propagates and no file (final or temporary) remains.
    stream = InterruptedStream(PAYLOAD, 10_000, KeyboardInterrupt())
    fake_web.pages[PRIMARY] = lambda: stream
    with pytest.raises(KeyboardInterrupt):
        res.ensure_resources(data_root, [blob_resource()], "things")
    assert stream.delivered == 10_000
    assert leftovers(data_root / "things") == []
    assert res.check_resource(data_root, blob_resource()).status == "MISSING"


def test_no_network_and_no_mirror_lists_every_url_and_the_mirror_option(data_root, fake_web):
    other = res.Resource("other.txt", "things", (res.Source(
        "other.txt", ("http://primary.example/other.txt",), sha256_of(OTHER), len(OTHER), "raw"),))
    with pytest.raises(res.DataNotFoundError) as caught:
        res.ensure_resources(data_root, [blob_resource(), other], "things")
    message = str(caught.value)
    for url in (PRIMARY, FALLBACK, "http://primary.example/other.txt"):
        assert url in message
    assert "BENCH_DATA_MIRROR" in message
    assert "unreachable from the tests" in message
    assert isinstance(caught.value, UserError)


def test_file_url_through_the_real_opener(data_root, tmp_path, monkeypatch):
    upstream = tmp_path / "upstream" / "blob.txt"
    upstream.parent.mkdir()
    upstream.write_bytes(PAYLOAD)
    monkeypatch.setattr(res, "_open_url", ORIGINAL_OPEN_URL)
    [located] = res.ensure_resources(data_root, [blob_resource(urls=(upstream.as_uri(),))], "things")
    assert located.path.read_bytes() == PAYLOAD


@pytest.mark.parametrize("gzipped", [False, True], ids=["as-is", "gz"])
def test_mirror_is_used_instead_of_the_network(data_root, tmp_path, use_mirror, gzipped):
    use_mirror(write_mirror(tmp_path / "mirror", {"things/blob.txt": PAYLOAD}, gzipped))
    # The autouse fixture makes any network access fail the test.
    [located] = res.ensure_resources(data_root, [blob_resource()], "things")
    assert located.path.read_bytes() == PAYLOAD


def test_mirror_missing_file_names_paths_and_never_downloads(data_root, tmp_path, use_mirror):
    mirror = use_mirror(write_mirror(tmp_path / "mirror", {"things/unrelated": b""}, False))
    with pytest.raises(res.DataNotFoundError) as caught:
        res.ensure_resources(data_root, [blob_resource()], "things")
    message = str(caught.value)
    assert str(mirror / "things" / "blob.txt") in message
    assert str(mirror / "things" / "blob.txt.gz") in message
    assert "BENCH_DATA_MIRROR" in message


def test_corrupt_mirror_file_is_reported_and_not_copied(data_root, tmp_path, use_mirror):
    use_mirror(write_mirror(tmp_path / "mirror", {"things/blob.txt": PAYLOAD[:-7]}, True))
    with pytest.raises(res.ChecksumMismatchError) as caught:
        res.ensure_resources(data_root, [blob_resource()], "things")
    message = str(caught.value)
    assert "blob.txt.gz" in message
    assert sha256_of(PAYLOAD) in message and sha256_of(PAYLOAD[:-7]) in message
    assert leftovers(data_root / "things") == []


def test_corrupt_local_file_is_reported_with_both_hashes_and_left_untouched(data_root, fake_web):
    fake_web.pages[PRIMARY] = PAYLOAD
    local = data_root / "things" / "blob.txt"
    local.parent.mkdir(parents=True)
    local.write_bytes(PAYLOAD[:1000])  # a truncated earlier download, say
    with pytest.raises(res.ChecksumMismatchError) as caught:
        res.ensure_resources(data_root, [blob_resource()], "things")
    message = str(caught.value)
    assert str(local) in message
    assert sha256_of(PAYLOAD) in message and sha256_of(PAYLOAD[:1000]) in message
    assert "python -m bench data fetch things" in message and "Delete it" in message
    assert local.read_bytes() == PAYLOAD[:1000]
    assert fake_web.requested == []


def test_check_resource_statuses(data_root):
    resource = blob_resource()
    assert res.check_resource(data_root, resource).status == "MISSING"
    local = data_root / "things" / "blob.txt"
    local.parent.mkdir(parents=True)
    local.write_bytes(OTHER)
    check = res.check_resource(data_root, resource)
    assert (check.status, check.actual_sha256, check.expected_sha256) == (
        "MISMATCH", sha256_of(OTHER), sha256_of(PAYLOAD))
    local.write_bytes(PAYLOAD)
    assert res.check_resource(data_root, resource).status == "OK"


def test_alternative_source_chosen_by_checksum(data_root, tmp_path, use_mirror):
    # Two published copies under the same upstream name, told apart by their sha256.
    text = res.Source("blob.txt", (PRIMARY,), sha256_of(PAYLOAD), len(PAYLOAD), "raw")
    other = res.Source("blob.other", (FALLBACK,), sha256_of(OTHER), len(OTHER), "raw",
                       mirror_name="blob.txt")
    resource = res.Resource("blob.txt", "things", (text, other))
    use_mirror(write_mirror(tmp_path / "mirror", {"things/blob.txt": OTHER}, False))
    [located] = res.ensure_resources(data_root, [resource], "things")
    assert located.source is other
    assert located.path.name == "blob.other"


def test_mirror_that_is_not_a_directory(data_root, tmp_path, use_mirror):
    use_mirror(tmp_path / "no-such-mirror")
    with pytest.raises(UserError, match="is not a directory"):
        res.ensure_resources(data_root, [blob_resource()], "things")


def test_resolve_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "from-env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert res.resolve_data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert res.resolve_data_dir() == tmp_path / "from-env"
    monkeypatch.delenv("BENCH_DATA")
    assert res.resolve_data_dir() == tmp_path / "xdg" / "nvil-bench"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert res.resolve_data_dir() == tmp_path / "home" / ".cache" / "nvil-bench"
    assert not (tmp_path / "home").exists()  # resolving creates nothing


def test_cache_name_follows_raw_hashes_and_recipe(tmp_path):
    base = res.cache_path(tmp_path, "mnist-paper", "v1", ["a" * 64, "b" * 64])
    assert base.parent == tmp_path / "processed"
    assert base.name.startswith("mnist-paper-v1-") and len(base.stem.rsplit("-", 1)[1]) == 12
    assert res.cache_path(tmp_path, "mnist-paper", "v1", ["a" * 64, "c" * 64]) != base
    assert res.cache_path(tmp_path, "mnist-paper", "v2", ["a" * 64, "b" * 64]) != base
    assert res.cache_path(tmp_path, "mnist-paper", "v1", ["a" * 64, "b" * 64], {"seed": 1}) != base
    assert res.cache_path(tmp_path, "mnist-paper", "v1", ["a" * 64, "b" * 64]) == base


def test_atomic_file_discards_on_error(tmp_path):
    with pytest.raises(RuntimeError), res.AtomicFile(tmp_path, "x.npz") as atomic:
        atomic.handle.write(b"partial")
        raise RuntimeError("boom")
    assert leftovers(tmp_path) == []
    with res.AtomicFile(tmp_path, "x.npz") as atomic:
        atomic.handle.write(b"whole")
        atomic.commit(tmp_path / "x.npz")
    assert leftovers(tmp_path) == ["x.npz"]
    assert (tmp_path / "x.npz").read_bytes() == b"whole"
