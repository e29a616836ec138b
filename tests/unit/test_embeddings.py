"""The embeddings stage: what is embedded, resume, downstream reads, the index, image features."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from neggen_core.artifacts.schemas import DESCRIPTIONS, ITEMS, NEGATIVES
from neggen_core.artifacts.store import ArtifactRef, ArtifactStore
from neggen_core.artifacts.vectors import vector_array, vectors_of
from neggen_core.attributes.contract import item_inputs, read_attributes
from neggen_core.config import NeggenConfig, load_config
from neggen_core.embeddings.compute import attribute_rows, negative_attribute_texts
from neggen_core.embeddings.contract import INDEX_FILE, load_index, read_embeddings
from neggen_core.encoders.cached import attribute_text
from neggen_core.encoders.image import IMAGE_FEATURE_DIM, pixel_features
from neggen_core.encoders.index import IndexSettings, ItemIndex
from neggen_core.encoders.text import TextEncoder, bundled_encoder, load_sentence_model
from neggen_core.encoders.vector_cache import VectorCache
from neggen_core.errors import ConfigError
from neggen_core.negatives.contract import read_negatives
from neggen_core.pipeline.run import run_stage
from neggen_core.pipeline.stages import STAGE_ORDER, open_store, plan_versions
from neggen_core.train.contract import load_training_data
from tests.support.assertions import assert_same_vectors
from tests.support.helpers import DEMO_SETTINGS, copy_data_stages

TABLES = ("text_vectors", "item_embeddings", "negative_embeddings")


def _config(root: str) -> NeggenConfig:
    return load_config(None, [f"artifacts.root={root}", *DEMO_SETTINGS])


def _stage_encoder(store: ArtifactStore) -> TextEncoder:
    settings = _config(store.root).embeddings
    return TextEncoder(settings.encoder, settings.encode_batch_size, settings.encoder_backend)


@pytest.fixture(scope="module")
def demo(
    demo_built: tuple[str, dict[str, ArtifactRef]],
) -> tuple[ArtifactStore, dict[str, ArtifactRef]]:
    root, refs = demo_built
    return open_store(_config(root)), refs


def test_every_item_and_valid_negative_is_embedded_as_the_encoder_would(
    demo: tuple[ArtifactStore, dict[str, ArtifactRef]],
) -> None:
    store, refs = demo
    ref = refs["embeddings"]
    items = store.read_frame(refs["ingest"], "items", ITEMS)
    negatives = store.read_frame(refs["negatives"], "negatives", NEGATIVES)
    item_table = read_embeddings(store, ref, "item_embeddings")
    negative_table = read_embeddings(store, ref, "negative_embeddings")

    assert item_table.column("item_idx").to_pylist() == list(range(items.height))
    assert item_table.column("text_vector").null_count == 0
    # every demo item has an image: a visual description and Pillow features
    assert item_table.column("visual_vector").null_count == 0
    assert item_table.column("image_features").null_count == 0
    assert item_table.schema.field("image_features").type.list_size == IMAGE_FEATURE_DIM
    valid = negatives.filter(pl.col("status") == "valid")
    assert negative_table.column("negative_id").to_pylist() == valid["negative_id"].to_list()

    for column in ("text_vector", "visual_vector", "vector"):
        norms = np.linalg.norm(vectors_of(item_table.column(column)), axis=1)
        np.testing.assert_allclose(norms, 1.0, atol=1e-5)

    # the same vectors as a direct encode of the same texts by the configured encoder
    model = _stage_encoder(store)
    texts = [item.text() for item in item_inputs(items)][:20]
    direct = model.encode(texts)
    stored = vectors_of(item_table.column("text_vector"))[:20]
    assert_same_vectors(stored, direct, model.backend)
    sample = valid.head(20)
    direct = model.encode(sample["text"].to_list())
    stored = vectors_of(negative_table.column("text_vector"))[:20]
    assert_same_vectors(stored, direct, model.backend)

    # a negative and its positive share the vector of the modality that was not intervened
    item_text = vectors_of(item_table.column("text_vector"))
    item_visual = vectors_of(item_table.column("visual_vector"))
    frame = pl.from_arrow(negative_table.select(["item_idx", "modality"]))
    assert isinstance(frame, pl.DataFrame)
    positives = frame["item_idx"].to_numpy()
    text_negatives = (frame["modality"] == "text").to_numpy()
    image_negatives = (frame["modality"] == "image").to_numpy()
    assert text_negatives.any() and image_negatives.any()
    negative_text = vectors_of(negative_table.column("text_vector"))
    negative_visual = vectors_of(negative_table.column("visual_vector"))
    np.testing.assert_array_equal(
        negative_visual[text_negatives], item_visual[positives[text_negatives]]
    )
    np.testing.assert_array_equal(
        negative_text[image_negatives], item_text[positives[image_negatives]]
    )
    assert not np.array_equal(negative_text[text_negatives], item_text[positives[text_negatives]])

    manifest = store.manifest("embeddings", ref.version)
    assert manifest.info["encoder"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert manifest.info["dim"] == 384
    assert INDEX_FILE in {f.path for f in manifest.files}
    report = store.read_json(ref, "report.json")
    assert report["coverage"]["image_features"] == items.height


def test_downstream_tools_read_a_float32_matrix_with_polars_or_pyarrow_alone(
    demo: tuple[ArtifactStore, dict[str, ArtifactRef]],
) -> None:
    _, refs = demo
    folder = Path(refs["embeddings"].uri) / "item_embeddings"
    by_polars = pl.read_parquet(folder)["text_vector"].to_numpy()
    column = pq.read_table(folder).column("text_vector").combine_chunks()
    by_pyarrow = column.values.to_numpy().reshape(len(column), column.type.list_size)
    assert by_polars.dtype == by_pyarrow.dtype == np.float32
    assert by_polars.shape == by_pyarrow.shape == (len(column), 384)
    np.testing.assert_array_equal(by_polars, by_pyarrow)


def test_a_rerun_recomputes_nothing(
    demo: tuple[ArtifactStore, dict[str, ArtifactRef]], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, refs = demo
    config = _config(store.root)
    folder = Path(refs["embeddings"].uri)
    files = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}

    def no_encoding(self: TextEncoder, texts: list[str]) -> np.ndarray:
        raise AssertionError("a rerun encoded texts")

    monkeypatch.setattr(TextEncoder, "encode", no_encoding)
    upstream = {k: v for k, v in refs.items() if k != "embeddings"}
    again = run_stage(config, "embeddings", upstream)
    assert again.skipped and again.ref == refs["embeddings"]
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} == files


def test_a_killed_run_resumes_to_the_same_artifact(
    demo: tuple[ArtifactStore, dict[str, ArtifactRef]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, refs = demo
    config = _config(str(tmp_path / "killed"))
    upstream: dict[str, ArtifactRef] = {}
    for stage in STAGE_ORDER[: STAGE_ORDER.index("embeddings")]:
        upstream[stage] = run_stage(config, stage, upstream).ref
    original = TextEncoder.encode
    calls: list[int] = []

    def dies_in_the_second_part(self: TextEncoder, texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return original(self, texts)

    monkeypatch.setattr(TextEncoder, "encode", dies_in_the_second_part)
    with pytest.raises(KeyboardInterrupt):
        run_stage(config, "embeddings", upstream)
    monkeypatch.setattr(TextEncoder, "encode", original)
    resumed = run_stage(config, "embeddings", upstream).ref
    assert resumed.version == refs["embeddings"].version
    killed_store = open_store(config)
    report = killed_store.read_json(resumed, "report.json")
    assert report["texts_encoded_this_attempt"] == report["unique_texts"] - calls[0]
    for table in TABLES:
        assert read_embeddings(killed_store, resumed, table).equals(
            read_embeddings(store, refs["embeddings"], table)
        ), table
    assert killed_store.read_bytes(resumed, INDEX_FILE) == store.read_bytes(
        refs["embeddings"], INDEX_FILE
    )


def test_the_index_finds_each_item_first_and_its_neighbours(
    demo: tuple[ArtifactStore, dict[str, ArtifactRef]],
) -> None:
    store, refs = demo
    index = load_index(store, refs["embeddings"])
    vectors = vectors_of(read_embeddings(store, refs["embeddings"], "item_embeddings")["vector"])
    scores, found = index.search(vectors, 5)
    assert found.shape == (len(vectors), 5) and index.kind == "exact"
    np.testing.assert_array_equal(found[:, 0], np.arange(len(vectors)))
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    hnsw = ItemIndex.build(vectors, IndexSettings(exact_max_items=10))
    assert hnsw.kind == "hnsw"
    _, approximate = hnsw.search(vectors, 5)
    assert (approximate[:, 0] == np.arange(len(vectors))).mean() > 0.99
    assert ItemIndex.build(vectors, IndexSettings(exact_max_items=10)).to_bytes() == (
        hnsw.to_bytes()
    )


def test_a_negative_that_duplicates_another_real_item_is_flagged() -> None:
    encoder = TextEncoder("all-MiniLM-L6-v2")
    catalogue = [
        "Title: Swingline Classic Desk Stapler, Red\nCategories: Office Supplies > Staplers",
        "Title: Swingline Classic Desk Stapler, Blue\nCategories: Office Supplies > Staplers",
        "Title: Pilot G2 Gel Pens, Black Ink, 12 Pack\nCategories: Office Supplies > Pens",
    ]
    index = ItemIndex.build(encoder.encode(catalogue), IndexSettings())
    negatives = [
        catalogue[1],  # the red stapler turned blue: exactly another real item
        "Title: Swingline Classic Desk Stapler, Red\nCategories: Office Supplies > Pens",
    ]
    nearest, similarity = index.nearest_other(encoder.encode(negatives), np.array([0, 0]))
    threshold = load_config(None).embeddings.near_duplicate_threshold
    assert nearest[0] == 1 and similarity[0] >= threshold
    assert nearest[1] != 0 and similarity[1] < threshold


def test_vector_arrays_keep_nulls_as_nulls() -> None:
    matrix = np.arange(12, dtype=np.float32).reshape(4, 3)
    array = vector_array(matrix, np.array([True, False, True, True]))
    assert array.null_count == 1 and array[1].as_py() is None
    np.testing.assert_array_equal(vectors_of(array.filter(array.is_valid())), matrix[[0, 2, 3]])
    with pytest.raises(ValueError, match="null vectors"):
        vectors_of(array)


def _picture(colour: tuple[int, int, int], shape: str) -> np.ndarray:
    image = Image.new("RGB", (64, 64), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    if shape == "circle":
        draw.ellipse((12, 12, 52, 52), fill=colour)
    else:
        draw.rectangle((8, 20, 56, 44), fill=colour)
    return np.asarray(image)


def test_image_features_follow_colour_and_shape() -> None:
    red_circle = pixel_features(_picture((220, 30, 30), "circle"))
    blue_circle = pixel_features(_picture((30, 30, 220), "circle"))
    red_bar = pixel_features(_picture((220, 30, 30), "rectangle"))
    assert red_circle.shape == (IMAGE_FEATURE_DIM,) and red_circle.dtype == np.float32
    assert np.isclose(np.linalg.norm(red_circle), 1.0)
    colour, shape = slice(0, IMAGE_FEATURE_DIM - 10), slice(IMAGE_FEATURE_DIM - 10, None)

    def cosine(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    # colour lives in the histogram part, shape in the descriptors
    assert cosine(red_circle[colour], red_bar[colour]) > 0.99
    assert cosine(red_circle[colour], blue_circle[colour]) < 0.5
    assert cosine(red_circle[shape], blue_circle[shape]) > 0.99
    assert cosine(red_circle[shape], red_bar[shape]) < 0.95


def test_an_unloadable_encoder_name_fails_fast_and_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    began = time.perf_counter()
    with pytest.raises(ConfigError, match=r"embeddings\.encoder 'no-such-org/no-such-model'.*"):
        load_sentence_model("no-such-org/no-such-model")
    assert time.perf_counter() - began < 10


def test_descriptions_table_feeds_the_visual_vectors(
    demo: tuple[ArtifactStore, dict[str, ArtifactRef]],
) -> None:
    store, refs = demo
    descriptions = store.read_frame(refs["attributes"], "descriptions", DESCRIPTIONS)
    visual = descriptions.filter(pl.col("modality") == "image").sort("item_idx")
    table = read_embeddings(store, refs["embeddings"], "item_embeddings")
    stored = vectors_of(table["visual_vector"])
    encoder = _stage_encoder(store)
    direct = encoder.encode(visual["text"].head(10).to_list())
    assert_same_vectors(stored[visual["item_idx"].head(10).to_numpy()], direct, encoder.backend)


def test_the_vector_cache_keeps_whole_parts_across_instances(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ArtifactStore(str(tmp_path), "demo")
    identity = {"model": "m", "backend": "torch"}
    cache = VectorCache(store, identity, dim=3)
    vectors = np.arange(6, dtype=np.float32).reshape(2, 3)
    cache.put(["a", "b"], vectors)
    found, missing = VectorCache(store, identity, dim=3).get(["b", "x", "a"])
    assert missing == [1]
    assert np.array_equal(found[[0, 2]], vectors[[1, 0]])
    assert len(VectorCache(store, {**identity, "backend": "openvino"}, dim=3)) == 0

    broken = Path(cache.uri) / "part-0.parquet"
    broken.write_bytes(b"not parquet")
    with caplog.at_level("WARNING"):
        assert len(VectorCache(store, identity, dim=3)) == 2
    assert "vector-cache part that does not read" in caplog.text and not broken.exists()


def test_a_new_embeddings_version_encodes_only_texts_it_has_not_seen(
    demo: tuple[ArtifactStore, dict[str, ArtifactRef]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another setting, same texts: every vector comes from the cache the first version filled
    (no text encoded), equal to the first version's; the cache is not part of the version."""
    store, refs = demo
    config = load_config(
        None,
        [f"artifacts.root={store.root}", *DEMO_SETTINGS, "embeddings.near_duplicate_threshold=0.9"],
    )

    def no_encoding(self: TextEncoder, texts: list[str]) -> np.ndarray:
        raise AssertionError(f"encoded {len(texts)} texts the cache has")

    monkeypatch.setattr(TextEncoder, "encode", no_encoding)
    upstream = {k: v for k, v in refs.items() if k != "embeddings"}
    other = run_stage(config, "embeddings", upstream).ref
    assert other.version != refs["embeddings"].version
    report = store.read_json(other, "report.json")
    assert report["texts_encoded_this_attempt"] == 0
    assert report["texts_from_cache_this_attempt"] == report["unique_texts"]
    assert read_embeddings(store, other, "text_vectors").equals(
        read_embeddings(store, refs["embeddings"], "text_vectors")
    )
    off = load_config(
        None, [f"artifacts.root={store.root}", *DEMO_SETTINGS, "embeddings.vector_cache=false"]
    )
    assert plan_versions(off)["embeddings"] == plan_versions(_config(store.root))["embeddings"]


def test_openvino_runs_the_encoder_with_torchs_vectors_converted_once(
    demo: tuple[ArtifactStore, dict[str, ArtifactRef]],
    neggen_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The default backend: the same vectors as torch (cosine distance <= 1e-4) on the demo's
    item texts, the conversion kept, and the backend part of the version."""
    import openvino

    from neggen_core.encoders.ov_encoder import OpenVinoSentenceModel

    config = load_config(None, DEMO_SETTINGS)
    assert config.embeddings.encoder_backend == "openvino"
    store, refs = demo
    texts = [i.text() for i in item_inputs(store.read_frame(refs["ingest"], "items", ITEMS))][:96]
    ov = TextEncoder("all-MiniLM-L6-v2", 32, "openvino")
    assert (ov.backend, ov.fallback) == ("openvino", None)
    cosine = (TextEncoder("all-MiniLM-L6-v2", 32, "torch").encode(texts) * ov.encode(texts)).sum(1)
    assert 1 - cosine.min() <= 1e-4
    assert list((neggen_cache / "openvino").glob("*/model.xml"))

    def no_conversion(*_: object, **__: object) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(openvino, "convert_model", no_conversion)
    with pytest.raises(AssertionError, match="converted again"):
        OpenVinoSentenceModel(bundled_encoder(), "another model")
    reread = OpenVinoSentenceModel(bundled_encoder(), ov.identity["model"])
    assert np.allclose(reread.encode(texts[:8]), ov.encode(texts[:8]), atol=1e-6)

    torch = load_config(None, [*DEMO_SETTINGS, "embeddings.encoder_backend=torch"])
    assert plan_versions(torch)["embeddings"] != plan_versions(config)["embeddings"]


def test_where_openvino_cannot_run_the_model_torch_does_and_says_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from neggen_core.encoders import text
    from neggen_core.encoders.ov_encoder import UnsupportedModel

    def unsupported(name: str) -> None:
        raise UnsupportedModel("modules ['Transformer', 'Dense'], not Transformer, Pooling")

    monkeypatch.setattr(text, "_openvino_model", unsupported)
    with caplog.at_level("WARNING"):
        encoder = TextEncoder("all-MiniLM-L6-v2", 32, "openvino")
    assert encoder.backend == "torch" and "Dense" in (encoder.fallback or "")
    assert "runs on torch: OpenVINO cannot run it" in caplog.text
    assert encoder.identity["backend"] == "torch"


def test_one_openvino_model_serves_threads_at_once() -> None:
    """Shards on threads share the loaded model: each thread infers on its own request."""
    from concurrent.futures import ThreadPoolExecutor

    encoder = TextEncoder("all-MiniLM-L6-v2", 8, "openvino")
    texts = [f"a stapler of size {n} " * (n % 7 + 1) for n in range(48)]
    alone = encoder.encode(texts)
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda _: encoder.encode(texts), range(4)))
    for vectors in together:
        np.testing.assert_array_equal(vectors, alone)


def test_the_attribute_texts_are_a_modality_the_models_take_where_asked(
    demo: tuple[ArtifactStore, dict[str, ArtifactRef]], tmp_path: Path
) -> None:
    store, refs = demo
    copy_data_stages(str(store.root), tmp_path)
    config = load_config(
        None, [f"artifacts.root={tmp_path}", *DEMO_SETTINGS, "embeddings.attribute_text=true"]
    )
    copied = open_store(config)
    upstream = {s: copied.ref(s, refs[s].version) for s in ("ingest", "attributes", "negatives")}
    ref = run_stage(config, "embeddings", upstream).ref
    assert ref.version != refs["embeddings"].version

    attributes = read_attributes(copied, upstream["attributes"])
    rows = attribute_rows(attributes)
    items = read_embeddings(copied, ref, "item_embeddings")
    with_attributes = sorted(rows)
    assert items.column("attribute_vector").null_count == items.num_rows - len(with_attributes)
    # an item's vector is its attribute text's; a negative's, its positive's with its changes
    model = _stage_encoder(copied)
    first = with_attributes[:10]
    direct = model.encode([attribute_text(rows[i]) or "" for i in first])
    assert_same_vectors(vectors_of(items.column("attribute_vector"))[first], direct, model.backend)
    negatives = read_embeddings(copied, ref, "negative_embeddings")
    generated = read_negatives(copied, upstream["negatives"])
    ids = negatives.column("negative_id").to_pylist()[:10]
    texts = negative_attribute_texts(
        generated.filter(pl.col("negative_id").is_in(ids)).sort(
            pl.col("negative_id").replace_strict({n: i for i, n in enumerate(ids)})
        ),
        rows,
    )
    direct = model.encode([t or "" for t in texts])
    stored = vectors_of(negatives.column("attribute_vector"))[:10]
    assert_same_vectors(stored, direct, model.backend)

    data = load_training_data(copied, upstream["ingest"], ref)
    assert data.features is not None and data.features.names == ("text", "visual", "attributes")
