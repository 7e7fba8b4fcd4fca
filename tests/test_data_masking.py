"""Dynamic MLM masking: proportions, special tokens, determinism and exact resume (spec §2.3)."""

import io

import pytest
import torch

from llnbench.data.masking import IGNORE_INDEX, MLMMasker, TokenIds
from llnbench.errors import CheckpointError, ConfigError

BOS, PAD, EOS, UNK, MASK = 50257, 50258, 50259, 50260, 50261
IDS = TokenIds(mask_id=MASK, vocab_size=50262, special_ids=frozenset({BOS, PAD, EOS, UNK, MASK}))


def make_batch(batch: int = 64, length: int = 512, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 50257, (batch, length), generator=g)
    x[:, 0] = BOS
    x[:, -1] = EOS
    x[:, length // 3] = EOS  # a document boundary inside the block
    x[: batch // 4, length // 2 :] = PAD  # padded rows
    return x


def test_proportions_80_10_10_of_15_percent():
    x = make_batch(256, 512)  # ≈ 17k selected tokens: σ ≈ 0.003 for the 80% share
    masked, labels = MLMMasker(IDS, seed=3)(x)
    maskable = ~torch.isin(x, torch.tensor(sorted(IDS.special_ids)))
    selected = labels != IGNORE_INDEX
    rate = selected.sum().item() / maskable.sum().item()
    assert rate == pytest.approx(0.15, abs=0.01)
    n = selected.sum().item()
    as_mask = (masked[selected] == MASK).sum().item() / n
    unchanged = (masked[selected] == x[selected]).sum().item() / n
    randomised = ((masked[selected] != MASK) & (masked[selected] != x[selected])).sum().item() / n
    assert as_mask == pytest.approx(0.8, abs=0.015)
    assert unchanged == pytest.approx(0.1, abs=0.012)
    assert randomised == pytest.approx(0.1, abs=0.012)
    # labels hold the original token where selected, -100 elsewhere; the rest is untouched
    assert torch.equal(labels[selected], x[selected])
    assert torch.equal(masked[~selected], x[~selected])


def test_special_tokens_are_never_masked_nor_drawn():
    masker = MLMMasker(IDS, mlm_probability=0.5, seed=0)
    special = torch.tensor(sorted(IDS.special_ids))
    for seed in range(5):
        x = make_batch(16, 256, seed)
        masked, labels = masker(x)
        is_special = torch.isin(x, special)
        assert (labels[is_special] == IGNORE_INDEX).all()
        assert torch.equal(masked[is_special], x[is_special])
        replaced = (labels != IGNORE_INDEX) & (masked != MASK) & (masked != x)
        assert replaced.any()
        drawn = masked[replaced]
        assert not torch.isin(drawn, special).any()
        assert (drawn < 50257).all() and (drawn >= 0).all()


def test_at_least_one_token_per_batch():
    x = torch.tensor([[BOS, 42, EOS, PAD]])
    for seed in range(20):
        _, labels = MLMMasker(IDS, mlm_probability=0.001, seed=seed)(x)
        assert (labels != IGNORE_INDEX).sum().item() == 1
        assert labels[0, 1].item() == 42
    only_specials = torch.tensor([[BOS, EOS, PAD]])
    masked, labels = MLMMasker(IDS, seed=0)(only_specials)
    assert (labels == IGNORE_INDEX).all() and torch.equal(masked, only_specials)


def test_input_is_not_modified_and_list_of_rows_is_accepted():
    x = make_batch(4, 64)
    before = x.clone()
    a = MLMMasker(IDS, seed=5)(x)
    assert torch.equal(x, before)
    b = MLMMasker(IDS, seed=5)(list(x))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_same_seed_same_masks_other_seed_other_masks():
    x = make_batch(8, 128)
    a, la = MLMMasker(IDS, seed=1)(x)
    b, lb = MLMMasker(IDS, seed=1)(x)
    _, lc = MLMMasker(IDS, seed=2)(x)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(la, lc)


def test_resume_masks_exactly_like_an_uninterrupted_run():
    batches = [make_batch(8, 128, seed) for seed in range(4)]
    uninterrupted = MLMMasker(IDS, seed=7)
    expected = [uninterrupted(b) for b in batches]

    first = MLMMasker(IDS, seed=7)
    for b in batches[:2]:
        first(b)
    buffer = io.BytesIO()
    torch.save({"masker": first.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)["masker"]

    resumed = MLMMasker(IDS, seed=999)  # the seed is overridden by the restored state
    resumed.load_state_dict(state)
    assert resumed.seed == 7
    for b, (want_ids, want_labels) in zip(batches[2:], expected[2:]):
        got_ids, got_labels = resumed(b)
        assert torch.equal(got_ids, want_ids)
        assert torch.equal(got_labels, want_labels)


def test_bad_settings_and_bad_state_are_refused():
    with pytest.raises(ConfigError, match="mlm_probability"):
        MLMMasker(IDS, mlm_probability=1.5)
    with pytest.raises(ConfigError, match="sum to at most 1"):
        MLMMasker(IDS, mask_fraction=0.9, random_fraction=0.2)
    with pytest.raises(CheckpointError, match="generator"):
        MLMMasker(IDS).load_state_dict({"generator": [1, 2, 3]})


def test_works_with_the_tokenizer_object():
    from llnbench.data.tokenizer import load_tokenizer

    tok = load_tokenizer()
    masker = MLMMasker(tok, seed=0)
    assert masker.mask_id == tok.mask_id
    assert len(masker.random_ids) == len(tok) - 5
    ids = torch.tensor([tok.encode_batch(["The quick brown fox jumps over the lazy dog."])[0]])
    masked, labels = masker(ids)
    assert masked.shape == ids.shape and (labels != IGNORE_INDEX).sum() >= 1


def test_random_replacements_skip_specials_anywhere_in_the_vocabulary():
    """RoBERTa's hub ids put the specials at 0–3 and <mask> last: draws must still avoid them."""
    small = TokenIds(mask_id=9, vocab_size=10, special_ids=frozenset({0, 1, 2, 3, 9}))
    x = torch.randint(4, 9, (64, 64), generator=torch.Generator().manual_seed(0))
    x[:, 0], x[:, -1] = 0, 2
    masked, labels = MLMMasker(small, mlm_probability=0.5, seed=0)(x)
    replaced = masked[(labels != IGNORE_INDEX) & (masked != 9)]
    assert len(replaced) > 300
    assert set(replaced.tolist()) == {4, 5, 6, 7, 8}
