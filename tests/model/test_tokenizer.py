import pytest

from model.tokenizer import SPECIAL_TOKENS, ByteTokenizer, load_checkpoint_tokenizer


def test_bytes_round_trip_including_unicode():
    tokenizer = ByteTokenizer()
    text = 'type("Grüße, 世界")'
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_special_ids_follow_bytes_and_are_skipped_on_decode():
    tokenizer = ByteTokenizer()
    assert tokenizer.pad_id == 256
    assert tokenizer.vocab_size == 256 + len(SPECIAL_TOKENS)
    assert tokenizer.decode([tokenizer.action_start_id, *tokenizer.encode("ok"), tokenizer.action_end_id]) == "ok"


def test_checkpoint_tokenizer_json_loads_without_network(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[UNK]": 0, "click": 1, "the": 2, "button": 3}
    model = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    model.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    model.save(str(tmp_path / "tokenizer.json"))

    loaded = load_checkpoint_tokenizer(tmp_path)
    assert loaded("click the button")["input_ids"] == [1, 2, 3]


def test_missing_tokenizer_json_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json: missing"):
        load_checkpoint_tokenizer(tmp_path)
