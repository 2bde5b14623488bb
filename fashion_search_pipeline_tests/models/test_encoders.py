"""Tests for models/encoders.py on real (tiny, random-weight) open_clip models and real image bytes."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

from fashion_search_pipeline.models.checkpoints import TINY_CONFIG, write_random_checkpoint
from fashion_search_pipeline.models.encoders import encode_images, encode_texts, iter_image_batches, pixel_plan
from fashion_search_pipeline.models.loading import LoadedClip, load_clip
from fashion_search_pipeline.models.precision import BF16_AUTOCAST, FP32, PrecisionChoice
from fashion_search_pipeline.models.registry import ModelSpec

DATA = Path(__file__).resolve().parents[1].parent.parent / "shared" / "data" / "fashion-catalog" / "drops"

TEXTS = [
    "Puma Men Ferrari Black Fleece Jacket",
    "red",
    "!!! sale !!!",  # '!' is token id 0, the same id as padding
    "Nike Women Navy Blue Printed Round Neck T-shirt with short sleeves and a relaxed fit " * 4,  # hits 77
    "",
    "Puma Deck Navy Blue Backpack",
    "Ferrari Tee",
]


def image_bytes(colour, size=(96, 64), fmt="JPEG", mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, fmt)
    return buffer.getvalue()


def gradient_jpeg(width=640, height=480) -> bytes:
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    pixels = np.stack([x, y, 255 - x], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def full_length_text(clip: LoadedClip, texts) -> np.ndarray:
    """open_clip's own encode_text over the whole context, the reference the encoder must match."""
    with torch.inference_mode():
        return clip.model.encode_text(clip.tokenizer(texts), normalize=True).float().numpy()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_text_vectors_are_normalised_float32_in_input_order(tiny_loaded_clip):
    vectors = encode_texts(tiny_loaded_clip, TEXTS, batch_size=3)
    assert vectors.shape == (len(TEXTS), 32)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    one_by_one = np.concatenate([encode_texts(tiny_loaded_clip, [text]) for text in TEXTS])
    np.testing.assert_allclose(vectors, one_by_one, atol=1e-5)
    assert encode_texts(tiny_loaded_clip, []).shape == (0, 32)


def test_truncated_text_batches_match_the_full_context(tiny_loaded_clip):
    vectors = encode_texts(tiny_loaded_clip, TEXTS, batch_size=4)
    assert cosines(vectors, full_length_text(tiny_loaded_clip, TEXTS)).min() >= 0.9999


@pytest.mark.slow  # builds ViT-B-32
def test_truncation_is_exact_on_the_vit_b_32_architecture():
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    clip = LoadedClip(
        spec=ModelSpec("vit-b-32-random", "ViT-B-32", "random.pt", device="cpu", precision="fp32"),
        model=model,
        preprocess=None,
        tokenizer=open_clip.get_tokenizer("ViT-B-32"),
        device=torch.device("cpu"),
        precision_choice=PrecisionChoice(FP32, "fp32"),
        embed_dim=512,
        version="random",
        batch_size=64,
    )
    texts = [TEXTS[0], TEXTS[2], TEXTS[5], "Women Pink Heels"]
    assert cosines(encode_texts(clip, texts), full_length_text(clip, texts)).min() >= 0.9999


def test_text_tower_without_causal_mask_is_encoded_at_full_length(tmp_path):
    bidirectional = json.loads(TINY_CONFIG.read_text())
    bidirectional["text_cfg"]["no_causal_mask"] = True
    architecture = tmp_path / "fsp-tiny-bidirectional.json"
    architecture.write_text(json.dumps(bidirectional))
    checkpoint = write_random_checkpoint(architecture, tmp_path / "bidirectional.pt")
    clip = load_clip(ModelSpec("bidirectional", str(architecture), str(checkpoint), device="cpu", precision="fp32"))
    assert cosines(encode_texts(clip, TEXTS), full_length_text(clip, TEXTS)).min() >= 0.9999


def test_image_vectors_are_normalised_float32(tiny_loaded_clip):
    images = [image_bytes("red"), image_bytes("blue", fmt="PNG"), image_bytes(90, mode="L")]
    vectors = encode_images(tiny_loaded_clip, images, batch_size=2)
    assert vectors.shape == (3, 32)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_bytes_and_pil_images_give_the_same_vector(tiny_loaded_clip):
    png = image_bytes("teal", fmt="PNG")
    from_bytes = encode_images(tiny_loaded_clip, [png])
    from_image = encode_images(tiny_loaded_clip, [Image.open(io.BytesIO(png))])
    np.testing.assert_allclose(from_bytes, from_image, atol=1e-6)


def test_reduced_size_jpeg_decoding_keeps_the_embedding(tiny_loaded_clip):
    jpeg = gradient_jpeg()
    drafted = encode_images(tiny_loaded_clip, [jpeg])
    fully_decoded = encode_images(tiny_loaded_clip, [Image.open(io.BytesIO(jpeg)).convert("RGB")])
    assert cosines(drafted, fully_decoded)[0] >= 0.99


def test_transparent_areas_are_white(tiny_loaded_clip):
    transparent = image_bytes((0, 0, 0, 0), fmt="PNG", mode="RGBA")
    white = image_bytes((255, 255, 255), fmt="PNG")
    np.testing.assert_allclose(
        encode_images(tiny_loaded_clip, [transparent]), encode_images(tiny_loaded_clip, [white]), atol=1e-6
    )


def test_image_batches_stream_keys_with_their_vectors(tiny_loaded_clip):
    colours = ["red", "green", "blue", "yellow", "purple"]
    items = ((f"item-{colour}", image_bytes(colour)) for colour in colours)
    batches = list(iter_image_batches(tiny_loaded_clip, items, batch_size=2))
    assert [keys for keys, _ in batches] == [["item-red", "item-green"], ["item-blue", "item-yellow"], ["item-purple"]]
    streamed = np.concatenate([vectors for _, vectors in batches])
    expected = encode_images(tiny_loaded_clip, [image_bytes(colour) for colour in colours], batch_size=5)
    np.testing.assert_allclose(streamed, expected, atol=1e-5)
    assert list(iter_image_batches(tiny_loaded_clip, [])) == []


def test_undecodable_image_names_its_key(tiny_loaded_clip):
    items = [
        ("good-1", image_bytes("red")),
        ("broken-42", b"\xff\xd8 not really a jpeg"),
        ("good-2", image_bytes("blue")),
    ]
    with pytest.raises(ValueError, match="'broken-42'"):
        list(iter_image_batches(tiny_loaded_clip, items, batch_size=8))
    truncated = image_bytes("red", size=(300, 300))[:200]
    with pytest.raises(ValueError, match="image 1 cannot be decoded"):
        encode_images(tiny_loaded_clip, [image_bytes("red"), truncated])


def test_bf16_autocast_stays_close_to_fp32(tiny_loaded_clip):
    bf16 = dataclasses.replace(tiny_loaded_clip, precision_choice=PrecisionChoice(BF16_AUTOCAST, "bf16 autocast"))
    images = [image_bytes(colour) for colour in ("red", "navy", "olive")] + [gradient_jpeg(128, 96)]
    image_cosines = cosines(encode_images(bf16, images), encode_images(tiny_loaded_clip, images))
    text_cosines = cosines(encode_texts(bf16, TEXTS), encode_texts(tiny_loaded_clip, TEXTS))
    assert image_cosines.min() >= 0.99
    assert text_cosines.min() >= 0.99


@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data not found at {DATA}")
def test_real_catalog_photos(tiny_loaded_clip):
    paths = sorted((DATA / "2026-11-01" / "images").glob("*.jpg"))[:6]
    batches = list(iter_image_batches(tiny_loaded_clip, ((p.name, p.read_bytes()) for p in paths), batch_size=4))
    assert [key for keys, _ in batches for key in keys] == [p.name for p in paths]
    vectors = np.concatenate([vectors for _, vectors in batches])
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)



@pytest.mark.parametrize("size", [(640, 480), (480, 640), (192, 256), (223, 225), (20, 50), (224, 224)])
def test_split_preprocessing_gives_open_clips_pixels(size):
    preprocess = image_transform_v2(PreprocessCfg(size=(224, 224)), is_train=False)
    plan = pixel_plan(preprocess)
    image = Image.open(io.BytesIO(gradient_jpeg(*size))).convert("RGB")
    split = plan.batch([plan.uint8_pixels(image)])[0]
    assert split.shape == (3, 224, 224)
    assert (split - preprocess(image)).abs().max() <= 1e-5


def test_other_preprocessing_is_left_to_open_clip():
    for resize_mode in ("squash", "longest"):
        assert pixel_plan(image_transform_v2(PreprocessCfg(size=224, resize_mode=resize_mode), is_train=False)) is None
    assert pixel_plan(image_transform_v2(PreprocessCfg(size=(224, 160)), is_train=False)) is None
