"""The one embedding store (embedding_cache): hit / miss, atomic writes, LRU size bound, corrupt entries ignored and removed, no pickle."""
from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from medsam_lite.embedding_cache import (EMBEDDING_SHAPE, MAGIC, SUFFIX, TAG_BYTES, CachedEncoder, DiskEmbeddingStore,
                                         EmbeddingCache, MemoryEmbeddingStore, embedding_key, input_digest)

ENTRY_BYTES = 4 * 256 * 64 * 64 + 128 + len(MAGIC) + TAG_BYTES  # float32 payload + .npy header + tag


def _key(i: int) -> str:
    return embedding_key(input_digest(np.full((4, 4), i, np.uint8)), "model", "openvino", "fp32")


def _embedding(seed: int) -> torch.Tensor:
    return torch.randn(EMBEDDING_SHAPE, generator=torch.Generator().manual_seed(seed))


def test_put_get_roundtrip_and_miss(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "emb")
    assert cache.get(_key(0)) is None
    emb = _embedding(0)
    cache.put(_key(0), emb)
    got = cache.get(_key(0))
    assert got is not None and got.dtype == np.float32 and tuple(got.shape) == EMBEDDING_SHAPE  # stores speak numpy
    assert np.array_equal(got, emb.numpy())
    assert cache.get(_key(1)) is None
    assert not [p for p in (tmp_path / "emb").iterdir() if p.name.startswith(".")], "temporary file left behind"


def test_key_depends_on_every_part() -> None:
    raw = np.arange(12, dtype=np.uint8).reshape(3, 4)
    base = embedding_key(input_digest(raw), "m", "openvino", "fp32")
    assert base == embedding_key(input_digest(raw.copy()), "m", "openvino", "fp32")
    assert base != embedding_key(input_digest(raw.reshape(4, 3)), "m", "openvino", "fp32")  # shape
    assert base != embedding_key(input_digest(raw.astype(np.uint16)), "m", "openvino", "fp32")  # dtype
    assert base != embedding_key(input_digest(raw + 1), "m", "openvino", "fp32")  # bytes
    assert base != embedding_key(input_digest(raw), "m2", "openvino", "fp32")
    assert base != embedding_key(input_digest(raw), "m", "torch", "fp32")
    assert base != embedding_key(input_digest(raw), "m", "openvino", "bf16")
    tensor = torch.rand(1, 3, 256, 256)
    assert input_digest(tensor) == input_digest(tensor.numpy())


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "wrong_shape", "nan"])
def test_corrupt_entry_is_ignored_removed_and_rebuilt(tmp_path: Path, damage: str) -> None:
    cache = EmbeddingCache(tmp_path)
    key = _key(0)
    cache.put(key, _embedding(0))
    path = tmp_path / f"{key}{SUFFIX}"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a numpy file at all" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "wrong_shape":
        with open(path, "wb") as fh:  # a file handle: np.save would append .npy to a path
            np.save(fh, np.zeros((1, 256, 32, 32), np.float32))
    else:
        bad = _embedding(0).numpy()
        bad[0, 0, 0, 0] = np.nan
        with open(path, "wb") as fh:
            np.save(fh, bad)
    assert cache.get(key) is None
    assert not path.exists(), "a corrupt entry must be removed"
    cache.put(key, _embedding(1))
    assert np.array_equal(cache.get(key), _embedding(1).numpy())


def test_pickled_entry_is_never_unpickled(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    cache = EmbeddingCache(tmp_path)
    key = _key(0)
    with open(tmp_path / f"{key}{SUFFIX}", "wb") as fh:
        np.save(fh, np.array([Boom()], dtype=object), allow_pickle=True)
    assert cache.get(key) is None
    assert not (tmp_path / "pwned").exists()
    with open(tmp_path / f"{_key(1)}{SUFFIX}", "wb") as fh:
        pickle.dump(Boom(), fh)
    assert cache.get(_key(1)) is None
    assert not (tmp_path / "pwned").exists()


def test_size_bound_evicts_least_recently_used(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, max_bytes=int(3.5 * ENTRY_BYTES))
    now = time.time()
    for i in range(3):
        cache.put(_key(i), _embedding(i))
        os.utime(tmp_path / f"{_key(i)}{SUFFIX}", (now - 100 + i, now - 100 + i))  # 0 oldest, 2 newest
    assert cache.get(_key(0)) is not None  # a hit makes 0 the most recently used; 1 is now the LRU
    cache.put(_key(3), _embedding(3))
    assert cache.size_bytes() <= cache.max_bytes
    assert _key(1) not in cache
    for i in (0, 2, 3):
        assert np.array_equal(cache.get(_key(i)), _embedding(i).numpy())


def test_put_rejects_wrong_shape_and_bad_keys(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    with pytest.raises(ValueError):
        cache.put(_key(0), torch.zeros(1, 256, 32, 32))
    with pytest.raises(ValueError):
        cache.get("../escape")
    with pytest.raises(ValueError):
        EmbeddingCache(tmp_path, max_bytes=0)


def test_predictor_reuses_persistent_embeddings(tmp_path) -> None:
    """A second Predictor on the same volume with other boxes runs no encoder: every slice comes from the
    cache folder, and the label maps equal the uncached ones."""
    from medsam_lite.model import build_medsam
    from medsam_lite.predictor import Predictor
    from medsam_lite.resources import load_example

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_medsam("repvit_m0_6_fpn").eval()
    case = load_example("3DBox_MR_brain_tumour.npz")
    boxes = case["boxes"].copy()
    boxes[:, 2], boxes[:, 5] = 12, 15
    other = boxes.copy()
    other[:, [0, 3]] += 5
    first = Predictor(model, backend="torch", embedding_cache=tmp_path)
    assert np.array_equal(first.predict_volume(case["imgs"], boxes, progress=False),
                          Predictor(model, backend="torch").predict_volume(case["imgs"], boxes, progress=False))
    assert first.propagator.encoder.hits == 0 and len(list(tmp_path.glob(f"*{SUFFIX}"))) == 4
    second = Predictor(model, backend="torch", embedding_cache=tmp_path)
    out = second.predict_volume(case["imgs"], other, progress=False)
    assert second.propagator.encoder.hits == 4  # slices 12..15, none encoded again
    assert np.array_equal(out, Predictor(model, backend="torch").predict_volume(case["imgs"], other, progress=False))


def _forge(path: Path, key: str, embedding: np.ndarray, tag: bytes = b"\0" * TAG_BYTES) -> None:
    """Write an entry as someone who can write to the folder but does not hold the user's secret would."""
    import io

    buffer = io.BytesIO()
    np.save(buffer, embedding.astype(np.float32), allow_pickle=False)
    path.write_bytes(MAGIC + tag + buffer.getvalue())


def test_forged_or_foreign_entries_are_never_trusted(tmp_path: Path) -> None:
    """Reliability item 13: a crafted, finite, well-shaped entry under a real key is a miss, not an embedding
    (before, any finite (1, 256, 64, 64) .npy under the key was returned), and the next put replaces it."""
    store = DiskEmbeddingStore(tmp_path, secret=b"s" * TAG_BYTES)
    key = _key(0)
    _forge(tmp_path / f"{key}{SUFFIX}", key, np.ones(EMBEDDING_SHAPE))
    assert store.get(key) is None
    np.save(tmp_path / f"{_key(1)}.npy", np.ones(EMBEDDING_SHAPE, np.float32))  # the old plain format
    (tmp_path / f"{_key(1)}.npy").rename(tmp_path / f"{_key(1)}{SUFFIX}")
    assert store.get(_key(1)) is None
    other = DiskEmbeddingStore(tmp_path, secret=b"o" * TAG_BYTES)  # another user sharing the folder
    other.put(_key(2), _embedding(2))
    assert store.get(_key(2)) is None and np.array_equal(other.get(_key(2)), _embedding(2).numpy())
    store.put(key, _embedding(0))  # replaces the forged entry
    assert np.array_equal(store.get(key), _embedding(0).numpy())
    # an entry moved to another key (a real embedding of another slice) is refused too
    (tmp_path / f"{key}{SUFFIX}").replace(tmp_path / f"{_key(3)}{SUFFIX}")
    assert store.get(_key(3)) is None


def test_user_secret_is_private_and_stable(tmp_path: Path) -> None:
    from medsam_lite.embedding_cache import user_secret

    path = tmp_path / "cfg" / "key"
    first = user_secret(path)
    assert len(first) == TAG_BYTES and user_secret(path) == first
    assert (path.stat().st_mode & 0o777) == 0o600


def test_memory_store_is_bounded_lru() -> None:
    size = 4 * 256 * 64 * 64
    store = MemoryEmbeddingStore(max_bytes=int(2.5 * size))
    for i in range(3):
        store.put(_key(i), _embedding(i))
        if i == 1:
            assert store.get(_key(0)) is not None  # 0 used last: 1 is the LRU when 2 arrives
    assert len(store) == 2 and store.size_bytes() <= store.max_bytes
    assert _key(1) not in store and np.array_equal(store.get(_key(0)), _embedding(0).numpy())
    with pytest.raises(ValueError):
        store.put(_key(5), torch.zeros(1, 256, 32, 32))
    store.clear()
    assert len(store) == 0 and store.size_bytes() == 0


def test_cached_encoder_equals_the_backend_and_encodes_once() -> None:
    """The one embedding path: the same key for (3, 256, 256) and (1, 3, 256, 256) inputs, the backend's
    exact output, one encoder run per distinct input whatever the store."""

    class Backend:
        name, precision, weights_sha256 = "fake", "fp32", "w"

        def __init__(self) -> None:
            self.calls = 0

        def encode(self, images: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return images[:, :1, :64, :64].repeat(1, 256, 1, 1) * 2.0

    images = torch.rand(3, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    for store in (MemoryEmbeddingStore(), None):
        backend = Backend()
        encoder = CachedEncoder(backend, store)
        assert encoder.key(images[0]) == encoder.key(images[:1])
        first = encoder(images)
        assert torch.equal(first, backend.encode(images)) and tuple(first.shape) == (3, 256, 64, 64)
        backend.calls = 0
        again = encoder(images)
        assert torch.equal(again, first)
        assert backend.calls == (0 if store is not None else 1)
