"""The one parse of a model folder (sutra.models.spec): what it reads, and what it refuses.

Folders come from tests/fixtures/pipelines (saved by sentence-transformers 6.2 itself) and from
copies of them edited to hold what sutra must refuse: a module it does not run, a Dense saved only
as pytorch_model.bin, modules out of order. A refused folder must fail when it is read, with a
message naming the module and its path, never embed as if the module were not there.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import sutra
from sutra.models.spec import ModelFolder

PIPELINES = Path(__file__).parent / "fixtures" / "pipelines"


def copy_of(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(PIPELINES / name, folder)
    return folder


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_a_sentence_transformers_6_pipeline_is_read_module_by_module():
    model = ModelFolder.load(PIPELINES / "mean_dense_dense_normalize")
    pipeline = model.pipeline
    assert pipeline.pooling.mode == "mean" and pipeline.pooling.include_prompt
    assert [(d.in_features, d.out_features, d.bias, d.activation) for d in pipeline.dense] == [
        (32, 24, True, "gelu"), (24, 12, False, "identity")]
    assert pipeline.normalize and model.normalize
    assert model.embedding_dim == pipeline.output_dim == 12 and model.hidden_size == 32
    # sentence-transformers 6 keeps the length in tokenizer_config.json's model_max_length
    assert model.max_seq_length == 64
    assert pipeline.describe() == ("Transformer(bert) -> Pooling(mean) -> Dense(32->24, gelu) -> "
                                   "Dense(24->12, identity) -> Normalize")
    weight, bias = pipeline.dense[1].load()
    assert weight.shape == (12, 24) and weight.dtype == np.float32 and bias is None
    arch = model.architecture
    assert arch.family == "bert" and arch.num_layers == 2 and arch.hidden_size == 32
    assert arch.weight_names["layers.1.ffn.out.weight"] == "encoder.layer.1.output.dense.weight"
    assert arch.shapes["layers.1.ffn.out.weight"] == (32, 64)


@pytest.mark.parametrize("name, mode", [("cls", "cls"), ("max", "max"),
                                        ("mean_sqrt_len_tokens", "mean_sqrt_len"),
                                        ("weightedmean", "weightedmean"),
                                        ("lasttoken", "lasttoken")])
def test_every_pooling_mode_is_read(name, mode):
    model = ModelFolder.load(PIPELINES / name)
    assert model.pooling == mode and not model.normalize and model.embedding_dim == 32


def test_include_prompt_false_is_read():
    assert ModelFolder.load(PIPELINES / "mean_no_prompt").pipeline.pooling.include_prompt is False


def test_legacy_flags_and_the_default_mode(tmp_path):
    folder = copy_of(tmp_path, "mean")
    config = folder / "1_Pooling" / "config.json"
    config.write_text(json.dumps({"word_embedding_dimension": 32, "pooling_mode_cls_token": False,
                                  "pooling_mode_max_tokens": True}))
    assert ModelFolder.load(folder).pooling == "max"
    # No flag set: sentence-transformers pools by mean.
    config.write_text(json.dumps({"word_embedding_dimension": 32}))
    assert ModelFolder.load(folder).pooling == "mean"
    # Several modes would be concatenated by sentence-transformers; sutra refuses them.
    config.write_text(json.dumps({"pooling_mode": ["mean", "max"]}))
    with pytest.raises(sutra.UnsupportedModelError, match="exactly one pooling mode"):
        ModelFolder.load(folder)
    config.write_text(json.dumps({"pooling_mode": "median"}))
    with pytest.raises(sutra.UnsupportedModelError, match="unknown pooling_mode 'median'"):
        ModelFolder.load(folder)


@pytest.mark.parametrize("module_type", [
    "sentence_transformers.models.LayerNorm",
    "sentence_transformers.sentence_transformer.modules.lstm.LSTM",
    "sentence_transformers.models.WordEmbeddings",
    "my_package.modules.CustomHead",
])
def test_a_module_sutra_does_not_run_is_refused_by_name_and_path(tmp_path, module_type):
    folder = copy_of(tmp_path, "mean_dense_tanh")
    modules = json.loads((folder / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_Extra", "type": module_type})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(sutra.UnsupportedModelError, match=rf"{module_type}.*2_Extra.*cannot run"):
        ModelFolder.load(folder)
    with pytest.raises(sutra.UnsupportedModelError):
        sutra.Embedder(str(folder))


def test_a_dense_saved_as_pytorch_model_bin_is_refused_with_how_to_convert(tmp_path):
    folder = copy_of(tmp_path, "mean_dense_tanh")
    dense = folder / "2_Dense"
    (dense / "model.safetensors").rename(dense / "pytorch_model.bin")
    with pytest.raises(sutra.UnsupportedModelError,
                       match=r"2_Dense holds only pytorch_model.bin.*Convert it.*save_file"):
        ModelFolder.load(folder)


def test_modules_out_of_order_or_misconfigured_are_refused(tmp_path):
    folder = copy_of(tmp_path, "mean_dense_dense_normalize")
    modules = json.loads((folder / "modules.json").read_text())
    swapped = [modules[0], modules[1], modules[4], modules[2], modules[3]]  # Normalize, then Dense
    (folder / "modules.json").write_text(json.dumps(swapped))
    with pytest.raises(sutra.UnsupportedModelError, match="in this order; this model has "
                       "Transformer, Pooling, Normalize, Dense, Dense"):
        ModelFolder.load(folder)
    (folder / "modules.json").write_text(json.dumps(modules))
    edit_json(folder / "3_Dense" / "config.json", in_features=16)
    with pytest.raises(sutra.UnsupportedModelError, match="in_features=16, but the module before "
                       "it gives 24 features"):
        ModelFolder.load(folder)
    edit_json(folder / "3_Dense" / "config.json", in_features=24,
              activation_function="my_package.Swish")
    with pytest.raises(sutra.UnsupportedModelError, match="activation_function 'my_package.Swish'"):
        ModelFolder.load(folder)
    edit_json(folder / "3_Dense" / "config.json", activation_function=None, use_residual=True)
    with pytest.raises(sutra.UnsupportedModelError, match="use_residual"):
        ModelFolder.load(folder)
    edit_json(folder / "3_Dense" / "config.json", use_residual=False,
              module_input_name="token_embeddings")
    with pytest.raises(sutra.UnsupportedModelError, match="module_input_name='token_embeddings'"):
        ModelFolder.load(folder)


def test_a_dense_without_activation_key_is_tanh(tmp_path):
    """sentence-transformers' Dense default; its config then has no activation_function."""
    folder = copy_of(tmp_path, "mean_dense_tanh")
    config = json.loads((folder / "2_Dense" / "config.json").read_text())
    assert config.pop("activation_function") == "torch.nn.modules.activation.Tanh"
    (folder / "2_Dense" / "config.json").write_text(json.dumps(config))
    assert ModelFolder.load(folder).pipeline.dense[0].activation == "tanh"


def test_a_checkpoint_that_does_not_match_its_config_is_refused(tmp_path):
    folder = copy_of(tmp_path, "mean")
    edit_json(folder / "config.json", num_hidden_layers=3)
    with pytest.raises(sutra.UnsupportedModelError, match=r"missing weight tensor "
                       r"'encoder\.layer\.2\.attention\.self\.query\.weight'"):
        ModelFolder.load(folder)
    edit_json(folder / "config.json", num_hidden_layers=2, model_type="gpt2")
    with pytest.raises(sutra.UnsupportedModelError, match="unsupported model_type 'gpt2'"):
        ModelFolder.load(folder)
