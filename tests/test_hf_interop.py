"""transformers interop, offline: a randomly initialised RobertaForMaskedLM saved to a folder is
loaded with pretrained=hf:PATH (logits equal), continued by pretrain and fine-tuned by glue with an
attention swapped in; llnbench runs export as save_pretrained folders (softmax: a plain
RobertaForMaskedLM with equal logits; others: recorded, and loaded back exactly)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import tiny_pretrain_args
from typer.testing import CliRunner

from llnbench.cli import app
from llnbench.data import GPT2_MERGES_ASSET, GPT2_VOCAB_ASSET, read_asset
from llnbench.data.tokenizer import build_bpe_tokenizer, load_tokenizer
from llnbench.errors import LlnbenchError
from llnbench.jobs.glue import build_model
from llnbench.model.hf_checkpoint import load_hf_pretrained
from llnbench.model.pretrained import load_pretrained
from llnbench.model.roberta import RobertaForMaskedLM

transformers = pytest.importorskip("transformers")
ATOL = 1e-5  # fp32 on CPU, as the issue asks
runner = CliRunner()


def roberta_like_tokenizer():
    """RoBERTa's layout: <s> <pad> </s> <unk> at 0..3 (so pad_token_id = 1, the usual position
    offset), the GPT-2 BPE after them, <mask> last."""
    gpt2 = json.loads(read_asset(GPT2_VOCAB_ASSET))
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    vocab |= {token: i + 4 for token, i in gpt2.items()}
    vocab["<mask>"] = len(vocab)
    return build_bpe_tokenizer(vocab, read_asset(GPT2_MERGES_ASSET).decode("utf-8"))


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    """A transformers RoBERTa checkpoint folder: random weights (biases, norms and the token
    type row too), save_pretrained, and its tokenizer beside it."""
    folder = tmp_path_factory.mktemp("hf") / "tiny-roberta"
    config = transformers.RobertaConfig(
        vocab_size=50264, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32 + 2, type_vocab_size=1,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.RobertaForMaskedLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(folder)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=roberta_like_tokenizer(), bos_token="<s>", eos_token="</s>",
        unk_token="<unk>", sep_token="</s>", cls_token="<s>", pad_token="<pad>",
        mask_token="<mask>",
    )  # fmt: skip
    tokenizer.save_pretrained(folder)
    return folder


TEXTS = ["The cat sat on the mat.", "A <mask> day in the park, with music and books."]


def batch(tokenizer):
    """A right-padded batch of the probe texts: (input_ids, attention_mask)."""
    rows = tokenizer.encode_batch(TEXTS)
    n = max(map(len, rows))
    ids = torch.full((len(rows), n), tokenizer.pad_id)
    mask = torch.zeros(len(rows), n, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    return ids, mask


@torch.no_grad()
def max_logit_difference(ours: RobertaForMaskedLM, theirs, tokenizer) -> float:
    ours.eval(), theirs.eval()
    ids, mask = batch(tokenizer)
    a = ours.logits(ids, mask)
    b = theirs(input_ids=ids, attention_mask=mask).logits
    return float((a - b)[mask.bool()].abs().max())


def llnbench_model(pre, tokenizer) -> RobertaForMaskedLM:
    model = RobertaForMaskedLM(pre.model, pre.attention, tokenizer.pad_id)
    model.encoder.load_weights(pre.encoder_state, "test")
    model.load_state_dict({**model.state_dict(), **pre.head_state})
    return model


def test_hf_checkpoint_loads_with_equal_logits_and_its_own_tokenizer(hf_folder: Path) -> None:
    pre = load_hf_pretrained(f"hf:{hf_folder}")
    assert pre.attention.name == "softmax" and pre.tokenizer == str(hf_folder)
    assert (pre.model.max_len, pre.model.hidden, pre.model.vocab_size) == (32, 32, 50264)
    tokenizer = load_tokenizer(pre.tokenizer)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(hf_folder)
    assert tokenizer.pad_id == 1 and tokenizer.encode_batch(TEXTS) == hf_tokenizer(TEXTS).input_ids
    hf_model = transformers.RobertaForMaskedLM.from_pretrained(hf_folder)
    ours = llnbench_model(pre, tokenizer)
    assert max_logit_difference(ours, hf_model, tokenizer) <= ATOL
    # the check can fail: without the folded token-type row the logits differ
    hf_model.roberta.embeddings.token_type_embeddings.weight.data.zero_()
    assert max_logit_difference(ours, hf_model, tokenizer) > 1e-3


def test_attention_is_swapped_in_with_its_own_fresh_parameters(hf_folder: Path) -> None:
    from llnbench.data.glue import TASKS
    from llnbench.schema import AttentionConfig

    lara = AttentionConfig.from_config({"name": "lara", "num_landmarks": 4})
    pre = load_hf_pretrained(f"hf:{hf_folder}", lara)
    model = build_model(TASKS["sst2_rt"], pre.model, pre.attention, 1, pre.encoder_state)
    hf_model = transformers.RobertaForMaskedLM.from_pretrained(hf_folder)
    layer = hf_model.roberta.encoder.layer[1].attention.self
    qkv = torch.cat([layer.query.weight, layer.key.weight, layer.value.weight])
    assert torch.equal(model.encoder.layers[1].attention.qkv.weight, qkv)
    assert model.encoder.layers[1].attention.core.num_landmarks == 4


def test_glue_fine_tunes_an_hf_checkpoint_with_another_attention(hf_folder, tmp_path) -> None:
    run_dir = tmp_path / "glue"
    result = runner.invoke(app, [
        "glue", "task=sst2_rt", f"pretrained=hf:{hf_folder}", "attention=lln",
        "max_train_samples=16", "max_eval_samples=16", "max_length=32", "trainer.batch_size=8",
        "trainer.max_steps=2", "wandb.mode=disabled", "submission=false", f"run_dir={run_dir}",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    results = json.loads((run_dir / "results.json").read_text())
    assert results["attention"]["name"] == "lln" and results["tokenizer"] == str(hf_folder)
    assert results["init"]["pretrained"] == f"hf:{hf_folder}"


def test_pretrain_continues_an_hf_checkpoint_then_exports_it_back(hf_folder, tmp_path) -> None:
    run_dir = tmp_path / "pretrain"
    args = tiny_pretrain_args(tmp_path, run_dir, f"pretrained=hf:{hf_folder}", "attention=softmax",
                              "trainer.max_steps=2", "trainer.lr=1e-12")  # fmt: skip
    args = [a for a in args if not a.startswith("model.")]  # the shape is the checkpoint's
    result = runner.invoke(app, ["pretrain", *args])
    assert result.exit_code == 0, result.output
    pre = load_pretrained(run_dir)
    assert pre.tokenizer == str(hf_folder) and pre.model.hidden == 32 and pre.step == 2
    original = load_hf_pretrained(f"hf:{hf_folder}")
    for key, value in original.encoder_state.items():  # lr ~ 0: the weights it started from
        torch.testing.assert_close(pre.encoder_state[key], value, atol=1e-6, rtol=0)

    out = tmp_path / "exported"
    result = runner.invoke(app, ["export", str(run_dir), "--format", "hf", str(out)])
    assert result.exit_code == 0, result.output
    assert "plain RobertaForMaskedLM" in result.output
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    hf_model = transformers.AutoModelForMaskedLM.from_pretrained(out)
    assert type(hf_model).__name__ == "RobertaForMaskedLM"
    tokenizer = load_tokenizer(pre.tokenizer)
    assert transformers.AutoTokenizer.from_pretrained(out)(TEXTS).input_ids == (
        tokenizer.encode_batch(TEXTS)
    )
    ours = llnbench_model(pre, tokenizer)
    assert max_logit_difference(ours, hf_model, tokenizer) <= ATOL


def test_other_attentions_export_as_recorded_and_load_back_exactly(tmp_path) -> None:
    """LARA (landmark MLPs of its own) on the embedded tokenizer (pad id 50258: the long
    position-table layout)."""
    run_dir = tmp_path / "pretrain"
    args = tiny_pretrain_args(tmp_path, run_dir, "attention=lara", "attention.num_landmarks=4",
                              "trainer.max_steps=2")  # fmt: skip
    assert runner.invoke(app, ["pretrain", *args]).exit_code == 0
    out = tmp_path / "exported"
    result = runner.invoke(app, ["export", str(run_dir), "--format", "hf", str(out)])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llnbench_roberta"
    assert config["llnbench"]["attention"]["name"] == "lara"
    assert not config["llnbench"]["runs_in_transformers"]
    assert "not transformers' softmax" in (out / "README.md").read_text()
    with pytest.raises(ValueError):  # AutoModel refuses instead of running softmax
        transformers.AutoConfig.from_pretrained(out)

    pre = load_pretrained(run_dir)
    back = load_hf_pretrained(f"hf:{out}")
    assert back.attention == pre.attention and back.model.max_len == pre.model.max_len
    tokenizer = load_tokenizer(back.tokenizer)
    assert tokenizer.pad_id == 50258
    ours, again = llnbench_model(pre, tokenizer), llnbench_model(back, tokenizer)
    ids, mask = batch(tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(again.eval().logits(ids, mask), ours.eval().logits(ids, mask),
                                   atol=0, rtol=0)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["glue", "pretrained=hf:/no/such/folder", "attention=lln"], "no such checkpoint folder"),
        (["pretrain", "pretrained=runs/x"], "pretraining starts from a transformers checkpoint"),
        (["export", "no-run", "--format", "onnx", "out"], "unknown format 'onnx'; allowed: hf"),
        (["export", "no-such-run", "out-folder"], "no checkpoint at no-such-run"),
    ],
    ids=["missing-folder", "pretrain-needs-hf", "format", "no-run"],
)
def test_errors_are_one_line(args: list[str], message: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    text = result.output.strip()
    assert result.exit_code == 2 and message in text, text
    assert len(text.splitlines()) == 1 and "Traceback" not in text


def test_refused_checkpoints(hf_folder: Path, tmp_path: Path) -> None:
    bert = tmp_path / "bert"
    bert.mkdir()
    config = json.loads((hf_folder / "config.json").read_text()) | {"model_type": "bert"}
    (bert / "config.json").write_text(json.dumps(config))
    with pytest.raises(LlnbenchError, match="model_type 'bert' is not a RoBERTa checkpoint"):
        load_hf_pretrained(f"hf:{bert}")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    result = runner.invoke(app, ["export", str(hf_folder), str(tmp_path / "full")])
    assert result.exit_code == 2 and "is not an empty folder" in result.output


def _damaged(hf_folder: Path, tmp_path: Path, damage) -> Path:
    """A copy of the checkpoint folder with ``damage(folder)`` applied."""
    import shutil

    folder = tmp_path / "damaged"
    shutil.copytree(hf_folder, folder)
    damage(folder)
    return folder


def _edit_config(**changes):
    def damage(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **changes}))

    return damage


def _write(name: str, text: str):
    return lambda folder: (folder / name).write_text(text)


def _index_not_json(folder: Path) -> None:
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors.index.json").write_text("{not json")


def _one_weight_reshaped(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    state["roberta.encoder.layer.1.intermediate.dense.weight"] = torch.zeros(63, 32)
    save_file(state, folder / "model.safetensors")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_write("config.json", "[1, 2]"), "config.json holds a JSON list; expected an object"),
        (_edit_config(hidden_size="32"),
         "config.json field hidden_size is '32' (string); expected an integer"),
        (_edit_config(hidden_size=64),
         "model.safetensors: tensor roberta.embeddings.position_embeddings.weight has shape "
         "(34, 32); config.json (hidden_size, intermediate_size, vocab_size, ...) gives it (34, 64)"),
        (_edit_config(pad_token_id=None),
         "config.json field pad_token_id is None (null); expected an integer"),
        (_edit_config(num_attention_heads=3),
         "num_attention_heads is 3 (integer); expected a divisor of hidden_size=32"),
        (_edit_config(num_hidden_layers=1),
         "the weights hold 2 encoder layers (roberta.encoder.layers 0..1) but config.json field "
         "num_hidden_layers is 1"),
        (_edit_config(llnbench=[1]), "config.json field llnbench is [1] (list); expected an object"),
        (_index_not_json, "model.safetensors.index.json is not valid JSON"),
        (_one_weight_reshaped,
         "model.safetensors: tensor roberta.encoder.layer.1.intermediate.dense.weight has shape "
         "(63, 32); config.json (hidden_size, intermediate_size, vocab_size, ...) gives it (64, 32)"),
    ],
    ids=["config-list", "hidden-string", "hidden-vs-weights", "pad-null", "heads-divisor",
         "fewer-layers-than-weights", "llnbench-entry-list", "index-not-json", "weight-shape"],
)  # fmt: skip
def test_damaged_hf_folder_is_one_clear_error(hf_folder, tmp_path, damage, message) -> None:
    folder = _damaged(hf_folder, tmp_path, damage)
    with pytest.raises(LlnbenchError) as caught:
        load_hf_pretrained(f"hf:{folder}")
    text = str(caught.value)
    assert message in text and len(text.splitlines()) == 1, text
    assert text.startswith(f"pretrained=hf:{folder}: ")


def test_pretrain_refuses_a_model_that_differs_from_the_hf_checkpoint(hf_folder, tmp_path) -> None:
    run_dir = tmp_path / "run"
    args = tiny_pretrain_args(tmp_path, run_dir, f"pretrained=hf:{hf_folder}", "model=small")
    result = runner.invoke(app, ["pretrain", *args])
    text = result.output.strip()
    assert result.exit_code == 2 and len(text.splitlines()) == 1, text
    assert "model=small differs from the checkpoint's config.json (model.layers=" in text
    assert "drop model= and model.* overrides" in text
    assert not run_dir.exists()  # refused before a run directory was made
