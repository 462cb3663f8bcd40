"""sutra.distill: gradients against finite differences, the optimizer against Adam's definition,
PCA against an SVD, metrics against their definitions, and the exported students against the
trainer's own path (sutra.Embedder and plain ONNX Runtime).

The teacher is a tiny random-weight BERT (hidden 48, 2 layers) with all-MiniLM-L6-v2's tokenizer,
so a static student's pass over the 30k-entry vocabulary takes seconds; texts are a committed
sample of WordNet (tests/fixtures/wordnet_sample.txt, WordNet 3.0 license beside it).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sutra.distill import (
    DistillationConfig,
    DistillationTrainer,
    ModelFormat,
    NotTrainedError,
    read_corpus,
    similarity_loss,
    split_corpus,
)
from sutra.distill.losses import normalize_rows, teacher_similarities
from sutra.distill.metrics import rankdata, recall_at_k, spearman
from sutra.distill.pca import principal_axes
from sutra.distill.projection import ProjectionStudent
from sutra.distill.static import StaticStudent, TokenBatch, segment_sum
from sutra.distill.training import Adam, SparseRows

FIXTURES = Path(__file__).parent / "fixtures"
HIDDEN, LAYERS, HEADS, INTER = 48, 2, 4, 96


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return read_corpus(FIXTURES / "wordnet_sample.txt")


@pytest.fixture(scope="module")
def tiny_teacher_folder(tmp_path_factory, efficient_folder) -> Path:
    """A random-weight BERT model folder (mean pooling, Normalize) with MiniLM's tokenizer."""
    from safetensors.numpy import save_file

    folder = tmp_path_factory.mktemp("tiny-teacher")
    vocab = json.loads(Path(efficient_folder, "config.json").read_text())["vocab_size"]
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if Path(efficient_folder, name).is_file():
            shutil.copyfile(Path(efficient_folder, name), folder / name)
    config = {"model_type": "bert", "hidden_size": HIDDEN, "num_attention_heads": HEADS,
              "num_hidden_layers": LAYERS, "intermediate_size": INTER, "hidden_act": "gelu",
              "max_position_embeddings": 128, "vocab_size": vocab, "type_vocab_size": 2,
              "layer_norm_eps": 1e-12, "pad_token_id": 0}
    (folder / "config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(7)

    def mat(*shape, scale):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    w = {"embeddings.word_embeddings.weight": mat(vocab, HIDDEN, scale=1.0),
         "embeddings.position_embeddings.weight": mat(128, HIDDEN, scale=0.2),
         "embeddings.token_type_embeddings.weight": mat(2, HIDDEN, scale=0.2),
         "embeddings.LayerNorm.weight": np.ones(HIDDEN, np.float32),
         "embeddings.LayerNorm.bias": np.zeros(HIDDEN, np.float32)}
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        for name, (o, n) in {"attention.self.query": (HIDDEN, HIDDEN),
                             "attention.self.key": (HIDDEN, HIDDEN),
                             "attention.self.value": (HIDDEN, HIDDEN),
                             "attention.output.dense": (HIDDEN, HIDDEN),
                             "intermediate.dense": (INTER, HIDDEN),
                             "output.dense": (HIDDEN, INTER)}.items():
            w[p + name + ".weight"] = mat(o, n, scale=1.0 / np.sqrt(n))
            w[p + name + ".bias"] = mat(o, scale=0.05)
        for name in ("attention.output.LayerNorm", "output.LayerNorm"):
            w[p + name + ".weight"] = np.ones(HIDDEN, np.float32)
            w[p + name + ".bias"] = np.zeros(HIDDEN, np.float32)
    save_file(w, str(folder / "model.safetensors"))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize",
         "type": "sentence_transformers.models.Normalize"},
    ]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": HIDDEN, "pooling_mode_mean_tokens": True}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64}))
    return folder


@pytest.fixture(scope="module")
def teacher(tiny_teacher_folder):
    import sutra

    return sutra.Embedder(str(tiny_teacher_folder))


def _config(**kw) -> DistillationConfig:
    base = dict(teacher_dim=HIDDEN, student_dim=16, num_iterations=300, eval_every=100,
                batch_size=16)
    base.update(kw)
    return DistillationConfig(**base)


@pytest.fixture(scope="module")
def split(corpus):
    return split_corpus(corpus, 200, seed=0)


@pytest.fixture(scope="module", params=["projection", "static"])
def trained(request, teacher, split, tmp_path_factory):
    cache = tmp_path_factory.mktemp(f"cache-{request.param}")
    trainer = DistillationTrainer(_config(student=request.param), cache_dir=cache)
    trainer.collect_teacher_embeddings(split[0], teacher)
    trainer.train()
    return trainer


# --------------------------------------------------------------------------- the loss


def _numeric_grad(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    g = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        old = x[index]
        x[index] = old + h
        up = f(x)
        x[index] = old - h
        down = f(x)
        x[index] = old
        g[index] = (up - down) / (2 * h)
    return g


@pytest.mark.parametrize("alpha", [0.0, 0.35, 1.0])
@pytest.mark.parametrize("use_cosine_loss", [False, True])
@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_loss_gradient_matches_finite_differences(alpha, use_cosine_loss, temperature):
    rng = np.random.default_rng(int(alpha * 100) + 7 * use_cosine_loss + int(temperature * 10))
    t = teacher_similarities(rng.standard_normal((6, 20)))
    z = rng.standard_normal((6, 5))
    kw = dict(temperature=temperature, alpha=alpha, use_cosine_loss=use_cosine_loss)
    parts, grad = similarity_loss(z, t, **kw)
    numeric = _numeric_grad(lambda x: similarity_loss(x, t, need_grad=False, **kw)[0].total, z)
    assert parts.total > 0
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)


def test_loss_terms_match_their_definitions():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 12))
    t = teacher_similarities(x)
    z = rng.standard_normal((5, 4))
    parts, _ = similarity_loss(z, t, temperature=2.0, alpha=0.25, use_cosine_loss=True)
    s = z / np.linalg.norm(z, axis=1, keepdims=True)
    c = s @ s.T
    kl = mse = corr = 0.0
    for i in range(5):
        others = [j for j in range(5) if j != i]
        p = np.exp(t[i, others] / 2.0) / np.exp(t[i, others] / 2.0).sum()
        q = np.exp(c[i, others] / 2.0) / np.exp(c[i, others] / 2.0).sum()
        kl += 4.0 * np.sum(p * np.log(p / q)) / 5
        mse += np.sum((c[i, others] - t[i, others]) ** 2) / 20
        corr += (1 - np.corrcoef(c[i, others], t[i, others])[0, 1]) / 5
    assert parts.kl == pytest.approx(0.25 * kl, rel=1e-10)
    assert parts.mse == pytest.approx(0.75 * mse, rel=1e-10)
    assert parts.correlation == pytest.approx(0.75 * corr, rel=1e-10)
    # a student with the teacher's own geometry has nothing left to learn
    perfect, grad = similarity_loss(x, t, temperature=2.0, alpha=0.25, use_cosine_loss=True)
    assert perfect.total == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(grad, 0.0, atol=1e-10)


def test_projection_student_gradient():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((8, 10))
    t = teacher_similarities(x)
    student = ProjectionStudent(rng.standard_normal((10, 4)), x)
    rows = np.arange(8)
    kw = dict(temperature=2.0, alpha=0.5, use_cosine_loss=True)

    def loss(w):
        return similarity_loss(x @ w, t, need_grad=False, **kw)[0].total

    z, cache = student.forward(rows)
    _, dz = similarity_loss(z, t, **kw)
    grad = student.backward(cache, dz)["weight"]
    numeric = _numeric_grad(loss, student.weight.astype(np.float64), h=1e-4)
    np.testing.assert_allclose(grad, numeric, rtol=2e-3, atol=1e-5)  # float32 weights


def test_static_student_gradient_touches_only_used_rows():
    rng = np.random.default_rng(5)
    sequences = [[1, 4, 4, 2], [1, 5, 2], [1, 6, 7, 2], [1, 2], [1, 7, 4, 2]]
    table = rng.standard_normal((10, 3))
    tokens = TokenBatch(sequences)
    student = StaticStudent(table, tokens)
    x = rng.standard_normal((5, 8))
    t = teacher_similarities(x)
    kw = dict(temperature=1.0, alpha=0.5, use_cosine_loss=True)
    rows = np.arange(5)
    z, cache = student.forward(rows)
    np.testing.assert_allclose(z, [table[s].sum(0) for s in sequences], rtol=1e-6)
    _, dz = similarity_loss(z, t, **kw)
    sparse = student.backward(cache, dz)["table"]
    assert sorted(sparse.indices.tolist()) == [1, 2, 4, 5, 6, 7]
    dense = np.zeros_like(table)
    dense[sparse.indices] = sparse.values

    def loss(tab):
        zz = np.stack([tab[s].sum(0) for s in sequences])
        return similarity_loss(zz, t, need_grad=False, **kw)[0].total

    numeric = _numeric_grad(loss, student.table.astype(np.float64), h=1e-4)
    np.testing.assert_allclose(dense, numeric, rtol=2e-3, atol=1e-5)


def test_segment_sum_handles_empty_segments():
    values = np.arange(12, dtype=np.float64).reshape(6, 2)
    offsets = np.array([0, 2, 2, 5, 6, 6])
    expected = [values[0:2].sum(0), [0, 0], values[2:5].sum(0), values[5:6].sum(0), [0, 0]]
    np.testing.assert_array_equal(segment_sum(values, offsets), expected)


# --------------------------------------------------------------------------- optimizer, PCA


def _textbook_adam(p, grads, lr, b1=0.9, b2=0.999, eps=1e-8):
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return p


def test_adam_matches_its_definition():
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal((4, 3))
    grads = [rng.standard_normal((4, 3)) for _ in range(5)]
    params = {"w": p0.copy()}
    opt = Adam(params, lr=0.01)
    for g in grads:
        opt.step(params, {"w": g})
    np.testing.assert_allclose(params["w"], _textbook_adam(p0, grads, 0.01), rtol=1e-12)


def test_sparse_adam_updates_only_its_rows():
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal((6, 2))
    rows = np.array([1, 4])
    grads = [rng.standard_normal((2, 2)) for _ in range(3)]
    params = {"t": p0.copy()}
    opt = Adam(params, lr=0.05)
    for g in grads:
        opt.step(params, {"t": SparseRows(rows, g)})
    untouched = [0, 2, 3, 5]
    np.testing.assert_array_equal(params["t"][untouched], p0[untouched])
    np.testing.assert_allclose(params["t"][rows], _textbook_adam(p0[rows], grads, 0.05),
                               rtol=1e-12)


@pytest.mark.parametrize("center", [False, True])
def test_principal_axes_span_the_top_singular_subspace(center):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 12)) @ rng.standard_normal((12, 12))
    axes, explained = principal_axes(x, 4, center=center)
    np.testing.assert_allclose(axes.T @ axes, np.eye(4), atol=1e-10)
    centred = x - x.mean(0) if center else x
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(axes @ axes.T, vt[:4].T @ vt[:4], atol=1e-8)
    np.testing.assert_allclose(explained, sv[:4] ** 2 / np.sum(sv ** 2), rtol=1e-8)


def test_principal_axes_of_selected_rows():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((20000, 6)).astype(np.float32) * np.arange(1, 7, dtype=np.float32)
    rows = np.sort(rng.choice(len(x), 12000, replace=False))  # more than one 8192-row block
    for center in (False, True):
        axes, explained = principal_axes(x, 3, center=center, rows=rows)
        ref_axes, ref_explained = principal_axes(x[rows], 3, center=center)
        np.testing.assert_allclose(axes, ref_axes, atol=1e-10)
        np.testing.assert_allclose(explained, ref_explained, rtol=1e-10)


# --------------------------------------------------------------------------- metrics


def test_rankdata_and_spearman():
    np.testing.assert_array_equal(rankdata(np.array([3.0, 1.0, 2.0, 2.0])), [4, 1, 2.5, 2.5])
    a = np.array([0.1, 0.4, 0.2, 0.9, 0.5])
    assert spearman(a, a ** 3) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    # the definition: Pearson correlation of the ranks
    b = np.array([0.3, 0.1, 0.2, 0.8, 0.2])
    expected = np.corrcoef(rankdata(a), rankdata(b))[0, 1]
    assert spearman(a, b) == pytest.approx(expected)


def test_recall_at_10():
    rng = np.random.default_rng(4)
    x = normalize_rows(rng.standard_normal((60, 8)))[0]
    assert recall_at_k(x, x) == 1.0
    # a random rotation keeps every neighbourhood; unrelated vectors do not
    q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    assert recall_at_k(x @ q, x) == pytest.approx(1.0)
    assert recall_at_k(normalize_rows(rng.standard_normal((60, 8)))[0], x) < 0.5


# --------------------------------------------------------------------------- the trainer


def test_training_improves_or_keeps_the_held_out_loss(trained):
    log = trained.log
    assert log.steps[0] == 0 and len(log.validation_loss) >= 2
    assert min(log.validation_loss) <= log.validation_loss[0]
    best = log.steps.index(log.best_step)
    assert log.validation_loss[best] == min(log.validation_loss)


def test_evaluate_reports_real_fidelity(trained, teacher, split):
    metrics = trained.evaluate(split[1], teacher, measure_speed=True)
    assert metrics.num_samples == 200
    assert metrics.dimension_reduction == pytest.approx(HIDDEN / 16)
    # recompute spearman on all pairs from the two embeddings, independently of the trainer
    s = trained.encode(split[1], teacher)
    t = normalize_rows(teacher.encode(split[1]))[0]
    iu = np.triu_indices(200, 1)
    assert metrics.spearman_fidelity == pytest.approx(spearman((s @ s.T)[iu], (t @ t.T)[iu]),
                                                      abs=1e-6)
    assert metrics.mean_squared_error == pytest.approx(np.mean(((s @ s.T) - (t @ t.T))[iu] ** 2),
                                                       rel=1e-4)
    assert 0.0 < metrics.recall_at_10 <= 1.0
    assert metrics.speedup > 0 and np.isfinite(metrics.teacher_texts_per_second)
    text = str(metrics)
    assert "spearman fidelity" in text and "recall@10" in text


def test_projection_student_keeps_the_teacher_geometry(teacher, split, tmp_path):
    """On the tiny teacher, a 16-of-48 projection keeps most of the ranking (PCA alone gets it
    there; the trainer must not lose it)."""
    trainer = DistillationTrainer(_config(student="projection"), cache_dir=tmp_path)
    trainer.collect_teacher_embeddings(split[0], teacher)
    trainer.train()
    assert trainer.evaluate(split[1], teacher, measure_speed=False).spearman_fidelity > 0.9


def test_export_onnx_matches_the_trainer(trained, teacher, split, tmp_path):
    import onnxruntime as ort

    import sutra

    texts = split[1][:64] + ["", "Ünïcödé and emoji 🙂 text"]
    expected = trained.encode(texts, teacher)
    folder = trained.export_model(tmp_path / "student")
    assert (folder / "model.onnx").is_file() and (folder / "tokenizer.json").is_file()
    info = json.loads((folder / "sutra_student.json").read_text())
    assert info["kind"] == trained.config.student and info["student_dim"] == 16

    embedder = sutra.Embedder(str(folder))
    assert embedder.dimensions == 16
    got = embedder.encode(texts)
    cosine = np.einsum("ij,ij->i", got, expected)
    assert cosine.min() >= 0.9999, cosine.min()

    # plain ONNX Runtime, tokenized by the folder's tokenizer.json
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_truncation()
    tok.enable_padding(pad_id=0)
    enc = tok.encode_batch(texts)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
             "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64)}
    feeds = {i.name: feeds.get(i.name, np.zeros_like(feeds["input_ids"]))
             for i in session.get_inputs()}
    (plain,) = session.run(["sentence_embedding"], feeds)
    assert np.einsum("ij,ij->i", plain, expected).min() >= 0.9999


@pytest.mark.parametrize("fmt", [ModelFormat.NPZ, ModelFormat.SAFETENSORS])
def test_export_arrays(trained, tmp_path, fmt):
    path = trained.export_model(tmp_path / f"student.{fmt.value}", fmt)
    if fmt is ModelFormat.NPZ:
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(str(arrays.pop("metadata")))
        assert meta["kind"] == trained.config.student
    else:
        from safetensors.numpy import load_file

        arrays = load_file(str(path))
    (name, array), = arrays.items()
    if trained.config.student == "projection":
        expected = trained.student.weight
        assert array.shape == ((16, HIDDEN) if fmt is ModelFormat.SAFETENSORS else (HIDDEN, 16))
        np.testing.assert_array_equal(array.T if fmt is ModelFormat.SAFETENSORS else array,
                                      expected)
    else:
        np.testing.assert_array_equal(array, trained.student.table)


def test_teacher_embeddings_are_cached(corpus, tmp_path):
    class CountingTeacher:
        fingerprint = "counting-teacher-v1"
        calls = 0

        def encode(self, texts, batch_size=64):
            CountingTeacher.calls += len(texts)
            rng = np.random.default_rng(len(texts))
            return rng.standard_normal((len(texts), 24)).astype(np.float32)

    config = DistillationConfig(teacher_dim=24, student_dim=8, batch_size=8)
    first = DistillationTrainer(config, cache_dir=tmp_path).collect_teacher_embeddings(
        corpus[:100], CountingTeacher())
    assert CountingTeacher.calls == 100
    again = DistillationTrainer(config, cache_dir=tmp_path).collect_teacher_embeddings(
        corpus[:100], CountingTeacher())
    assert CountingTeacher.calls == 100  # served from the cache
    np.testing.assert_array_equal(first, again)
    DistillationTrainer(config, cache_dir=tmp_path).collect_teacher_embeddings(
        corpus[:101], CountingTeacher())
    assert CountingTeacher.calls == 201  # other texts, other key
    assert not list(tmp_path.glob(".*partial*"))


# --------------------------------------------------------------------------- bad input


class _NaNTeacher:
    def encode(self, texts, batch_size=64):
        out = np.ones((len(texts), 24), dtype=np.float32)
        out[3, 5] = np.nan
        return out


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="student_dim=768 must be smaller than teacher_dim=768"):
        DistillationConfig(student_dim=768)
    with pytest.raises(ValueError, match="alpha"):
        DistillationConfig(alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        DistillationConfig(temperature=0)
    with pytest.raises(ValueError, match="student must be one of projection, static"):
        DistillationConfig(student="pca")
    with pytest.raises(ValueError, match="output_format must be one of onnx, npz, safetensors"):
        DistillationConfig(output_format="pickle")


def test_bad_corpora_are_refused(corpus, tmp_path):
    trainer = DistillationTrainer(DistillationConfig(teacher_dim=24, student_dim=8), cache_dir=None)
    with pytest.raises(ValueError, match="empty"):
        trainer.collect_teacher_embeddings([], _NaNTeacher())
    with pytest.raises(ValueError, match="5 texts are fewer than student_dim=8"):
        trainer.collect_teacher_embeddings(corpus[:5], _NaNTeacher())
    with pytest.raises(ValueError, match="NaN or infinite values for 1 of 50 texts.*index 3"):
        trainer.collect_teacher_embeddings(corpus[:50], _NaNTeacher())
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        trainer.collect_teacher_embeddings(["a", 2] * 10, _NaNTeacher())
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\n")
    with pytest.raises(ValueError, match="holds no text"):
        read_corpus(blank)


def test_wrong_teacher_width_is_named(corpus, teacher):
    trainer = DistillationTrainer(DistillationConfig(student_dim=8, teacher_dim=64), cache_dir=None)
    with pytest.raises(ValueError, match=f"gives {HIDDEN}-d embeddings but teacher_dim=64"):
        trainer.collect_teacher_embeddings(corpus[:40], teacher)


def test_evaluate_and_export_before_training(corpus, tmp_path):
    trainer = DistillationTrainer(DistillationConfig(teacher_dim=24, student_dim=8), cache_dir=None)
    with pytest.raises(NotTrainedError, match="train"):
        trainer.evaluate(corpus[:20], _NaNTeacher())
    with pytest.raises(NotTrainedError):
        trainer.export_model(tmp_path / "x")
    with pytest.raises(NotTrainedError, match="collect_teacher_embeddings"):
        trainer.train()
    assert not (tmp_path / "x").exists()


def test_failed_export_leaves_nothing(trained, tmp_path, monkeypatch):
    from sutra.distill import export

    def broken(*args, **kwargs):
        def write(folder):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "model.onnx").write_bytes(b"partial")
            raise OSError("disk full")

        return write

    monkeypatch.setattr("sutra.distill.trainer.model_folder_writer", broken)
    with pytest.raises(OSError, match="disk full"):
        trained.export_model(tmp_path / "student")
    assert list(tmp_path.iterdir()) == []
    # an existing folder is refused unless overwrite=True, and survives a failed overwrite
    (tmp_path / "student").mkdir()
    (tmp_path / "student" / "keep").write_text("old")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        trained.export_model(tmp_path / "student")
    with pytest.raises(OSError):
        trained.export_model(tmp_path / "student", overwrite=True)
    assert (tmp_path / "student" / "keep").read_text() == "old"
    monkeypatch.setattr("sutra.distill.trainer.model_folder_writer", export.model_folder_writer)
    trained.export_model(tmp_path / "student", overwrite=True)
    assert not (tmp_path / "student" / "keep").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student"]


def test_onnx_export_needs_an_embedder_teacher(corpus, tmp_path):
    class PlainTeacher:
        def encode(self, texts, batch_size=64):
            return np.random.default_rng(0).standard_normal((len(texts), 24)).astype(np.float32)

    trainer = DistillationTrainer(DistillationConfig(teacher_dim=24, student_dim=8, batch_size=8,
                                                     num_iterations=10), cache_dir=None)
    trainer.collect_teacher_embeddings(corpus[:80], PlainTeacher())
    trainer.train()
    with pytest.raises(ValueError, match="ONNX export needs a sutra.Embedder teacher"):
        trainer.export_model(tmp_path / "out")
    assert trainer.export_model(tmp_path / "out.npz", "npz").is_file()  # arrays still work
    static = DistillationTrainer(DistillationConfig(teacher_dim=24, student_dim=8, batch_size=8,
                                                    student="static"), cache_dir=None)
    static.collect_teacher_embeddings(corpus[:80], PlainTeacher())
    with pytest.raises(ValueError, match="static student needs a sutra.Embedder teacher"):
        static.train()


# --------------------------------------------------------------------------- the command line


def test_cli_distill_end_to_end(tiny_teacher_folder, tmp_path, capsys):
    import sutra
    from sutra.cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text((FIXTURES / "wordnet_sample.txt").read_text())
    out = tmp_path / "student"
    code = main(["distill", "--teacher", str(tiny_teacher_folder), "--student", "static",
                 "--student-dim", "16", "--corpus", str(corpus), "--out", str(out),
                 "--iterations", "200", "--test-size", "150", "--json", "--no-cache"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["test_texts"] == 150 and report["train_texts"] == 1050
    assert -1.0 <= report["metrics"]["spearman_fidelity"] <= 1.0
    vectors = sutra.Embedder(str(out)).encode(["a dog barked", "the stock market fell"])
    assert vectors.shape == (2, 16)
    assert main(["models", "info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "embedding_dim           16" in info and "static student of" in info

    code = main(["distill", "--teacher", str(tiny_teacher_folder), "--corpus", str(corpus),
                 "--out", str(out), "--student-dim", "16"])
    assert code == 1
    assert "exists" in capsys.readouterr().err
    code = main(["distill", "--teacher", str(tiny_teacher_folder), "--corpus",
                 str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o2"), "--student-dim", "16"])
    assert code == 1
    assert "missing.txt" in capsys.readouterr().err


def test_special_token_ids_exclude_unknown(efficient_folder):
    from sutra.tokenization import TextTokenizer

    tok = TextTokenizer(Path(efficient_folder) / "tokenizer.json")
    raw = tok._tokenizer
    ids = tok.special_token_ids()
    for token in ("[CLS]", "[SEP]", "[PAD]", "[MASK]"):
        assert raw.token_to_id(token) in ids
    assert raw.token_to_id("[UNK]") not in ids
    assert raw.token_to_id("the") not in ids
