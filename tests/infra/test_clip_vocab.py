"""The offline CLIP tokenizer: built from the BPE vocabulary open-clip-torch ships, identical to
OpenAI's (openai/clip-vit-large-patch14) and to open_clip's own tokenizer, cached once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodes.infra import clip_vocab
from nodes.infra.tokenizer import MissingTokenizer, clean_text, find_tokenizer_dir, load_tokenizer

open_clip = pytest.importorskip("open_clip")

PROMPTS = [
    "a photo of a cat",
    "A Photo Of A CAT",
    "masterpiece, best quality, (detailed face:1.2), [blurry], {red|blue} eyes, ((sharp))",
    "don't stop: it's we're they've I'm you'll he'd",
    "café naïve résumé — “curly quotes” ‘single’ … ellipsis",
    "日本語のプロンプト 中文提示 한국어 Ελληνικά русский",
    "emoji 🐱🐶 ✨ and symbols ½ ℃ © ™ ±",
    "ﬁne ligatures and mojibake cafÃ©",
    "html &amp; entities &lt;b&gt; &quot;quoted&quot;",
    "   runs\tof \n whitespace   ",
    "numbers 1234567890 3.14159 1e-5 #hashtag @user",
    "embedding:my_style, lora:thing:0.8, <lora:x:1>",
    "!!!???... ### $$$ %%% ^^^ &&& *** ___ +++ === ~~~",
    "",
    "dog " * 120,  # longer than one window: truncated at 77 like open_clip
    "a very long prompt with many different words " * 12,
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return clip_vocab.bundled_tokenizer_dir(root=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def open_clip_tokenizer():  # noqa: ANN201
    return open_clip.get_tokenizer("ViT-L-14")


def test_the_shipped_vocabulary_is_found() -> None:
    bpe = clip_vocab.find_bpe_vocabulary()
    assert bpe is not None and bpe.name == clip_vocab.BPE_FILE


def test_files_have_openais_layout(tokenizer_dir: Path) -> None:
    vocab = json.loads((tokenizer_dir / "vocab.json").read_text(encoding="utf-8"))
    merges = (tokenizer_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert len(vocab) == 49408 and sorted(vocab.values()) == list(range(49408))
    assert merges[0] == "#version: 0.2" and len(merges) == 1 + 48894
    assert vocab["!"] == 0 and vocab["!</w>"] == 256 and vocab["<|startoftext|>"] == 49406
    assert vocab["<|endoftext|>"] == 49407 and vocab["cat</w>"] == 2368
    assert vocab["".join(merges[1].split())] == 512  # the first merge follows the 512 byte symbols


def test_a_photo_of_a_cat(tokenizer_dir: Path) -> None:
    assert load_tokenizer(str(tokenizer_dir))("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]


@pytest.mark.parametrize("prompt", PROMPTS, ids=range(len(PROMPTS)))
def test_ids_match_open_clip(tokenizer_dir: Path, open_clip_tokenizer, prompt: str) -> None:  # noqa: ANN001
    tok = load_tokenizer(str(tokenizer_dir))
    ours = tok(clean_text(prompt), truncation=True, max_length=77)["input_ids"]
    theirs = open_clip_tokenizer([prompt])[0].tolist()
    assert len(ours) <= 77
    assert ours == theirs[: len(ours)] and not any(theirs[len(ours):])  # open_clip pads with 0


@pytest.mark.parametrize(("family_name", "pads"), [("sd15", [49407]), ("sd21", [0]), ("sdxl", [49407, 0])])
def test_each_encoder_pads_as_its_family_expects(tokenizer_dir: Path, family_name: str, pads: list[int]) -> None:
    """SD1 and SDXL's CLIP-L pad with the end token; OpenCLIP towers (SD2, SDXL's bigG) with "!" = 0,
    as the published diffusers tokenizer folders and ComfyUI do."""
    from nodes.diffusion.families import family

    spec = family(family_name).shipped_config()
    for index, expected in enumerate(pads):
        pad = spec["tokenizer" if index == 0 else "tokenizer_2"]["pad_token"]
        tok = load_tokenizer(str(tokenizer_dir), pad)
        ids = tok("a photo of a cat", padding="max_length", max_length=77)["input_ids"]
        assert ids[:7] == [49406, 320, 1125, 539, 320, 2368, 49407] and ids[7:] == [expected] * 70


def test_built_once_and_reused(tmp_path: Path) -> None:
    first = clip_vocab.bundled_tokenizer_dir(root=tmp_path)
    stamp = (first / "vocab.json").stat().st_mtime_ns
    again = clip_vocab.bundled_tokenizer_dir(root=tmp_path)
    assert again == first and (again / "vocab.json").stat().st_mtime_ns == stamp
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no staging folder left behind


def test_a_racing_builder_keeps_the_winners_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process renames its folder into place while we write ours: ours is discarded,
    theirs is used, and no staging folder is left."""
    real_write = clip_vocab.write_clip_tokenizer
    target: list[Path] = []

    def write_while_another_process_finishes(directory: Path, bpe_file: Path) -> Path:
        real_write(directory, bpe_file)
        winner = directory.parent / next(iter(target))
        real_write(winner, bpe_file)
        (winner / "winner").touch()
        return directory

    import hashlib

    digest = hashlib.sha256(clip_vocab.find_bpe_vocabulary().read_bytes()).hexdigest()[:16]
    target.append(Path(f"openai-clip-{digest}"))
    monkeypatch.setattr(clip_vocab, "write_clip_tokenizer", write_while_another_process_finishes)
    folder = clip_vocab.bundled_tokenizer_dir(root=tmp_path)
    assert folder.name == f"openai-clip-{digest}" and (folder / "winner").is_file()
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]


def test_a_user_folder_wins_and_a_missing_one_says_what_to_put_where(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tokenizer_dir: Path) -> None:
    monkeypatch.setenv(clip_vocab.CACHE_ENV, str(tokenizer_dir.parent.parent))
    user = tmp_path / "clip_tokenizer"
    (user / "clip-vit-large-patch14").mkdir(parents=True)
    assert find_tokenizer_dir(None, [user]) == tokenizer_dir  # an empty folder does not count
    for name in ("vocab.json", "merges.txt"):
        (user / "clip-vit-large-patch14" / name).write_bytes((tokenizer_dir / name).read_bytes())
    assert find_tokenizer_dir(None, [user]) == user / "clip-vit-large-patch14"
    with pytest.raises(MissingTokenizer, match=r"'other' not found: put its vocab.json and merges.txt .* into "
                                               r".*clip_tokenizer/other/"):
        find_tokenizer_dir("other", [user])
    monkeypatch.setattr(clip_vocab, "find_bpe_vocabulary", lambda: None)
    with pytest.raises(MissingTokenizer, match=r"install open-clip-torch .*put vocab.json and merges.txt of "
                                               r"openai/clip-vit-large-patch14 into models/clip_tokenizer/"
                                               r"clip-vit-large-patch14/; the folder looked in was .*empty/clip-vit"):
        find_tokenizer_dir(None, [tmp_path / "empty"])
