"""Tests for models/training.py: a tiny real open_clip model, real image bytes, no mocks."""

import io
import json
import math

import open_clip
import pytest
import torch
from open_clip.loss import ClipLoss
from PIL import Image

from fashion_search_pipeline.evaluation.held_out import paired_mrr, random_mrr
from fashion_search_pipeline.models.training import (
    TrainingConfig,
    contrastive_loss,
    label_loss,
    text_with_attributes,
    train_clip,
    training_captions,
)

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "head_width": 32, "layers": 1},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "yellow": (230, 220, 30),
           "black": (10, 10, 10), "white": (245, 245, 245), "purple": (130, 30, 160), "orange": (250, 140, 20)}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A builder of fresh tiny models (seeded, random weights) with their preprocess and tokenizer."""
    config = tmp_path_factory.mktemp("configs") / "fsp-test-tiny.json"
    config.write_text(json.dumps(TINY))
    open_clip.add_model_config(config)

    def build(seed: int = 0):
        torch.manual_seed(seed)
        model, _, preprocess = open_clip.create_model_and_transforms("fsp-test-tiny")
        return model, preprocess, open_clip.get_tokenizer("fsp-test-tiny")

    return build


def jpeg(rgb: tuple[int, int, int], size: tuple[int, int] = (30, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, rgb).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def colour_pairs():
    return [(jpeg(rgb), f"a plain {name} square") for name, rgb in COLOURS.items()]


def pairs_mrr(model, preprocess, tokenizer, pairs) -> float:
    """Text->image MRR of the model over the pairs: each caption ranks its own image among all of them."""
    model.eval()
    with torch.inference_mode():
        images = model.encode_image(torch.stack([preprocess(Image.open(io.BytesIO(data))) for data, _ in pairs]),
                                    normalize=True)
        texts = model.encode_text(tokenizer([text for _, text in pairs]), normalize=True)
    model.train()
    return paired_mrr((texts @ images.T).numpy())


@pytest.mark.slow  # training
def test_training_steps_lower_the_loss_on_a_fixed_batch(tiny_clip, colour_pairs):
    model, preprocess, tokenizer = tiny_clip()
    config = TrainingConfig(epochs=12, batch_size=len(colour_pairs), learning_rate=2e-3, warmup_steps=0,
                            augment_images=False, num_threads=1)
    messages = []
    threads = torch.get_num_threads()
    result = train_clip(model, preprocess, tokenizer, colour_pairs, config, log=messages.append)
    assert torch.get_num_threads() == threads
    assert result.steps == 12 and len(result.epoch_losses) == 12 and not result.stopped_by_time_budget
    assert result.epoch_losses[-1] < 0.7 * result.epoch_losses[0]
    assert result.samples_per_second > 0 and result.wall_seconds >= result.cache_seconds
    assert result.device == "cpu"
    # auto on a CPU measures a bf16-autocast step against fp32 and keeps the faster (fp32 where emulated)
    assert "measured" in result.precision_reason
    assert result.precision == ("bf16 autocast" if result.autocast_dtype == "bfloat16" else "fp32")
    assert not result.model.training
    assert any("samples/s" in m and "ETA" in m and "loss" in m for m in messages)


@pytest.mark.slow  # training
def test_training_samples_among_several_captions_per_image(tiny_clip, colour_pairs):
    model, preprocess, tokenizer = tiny_clip()
    pairs = [(image, [text, f"{text}, on a catalog page"]) for image, text in colour_pairs]
    result = train_clip(model, preprocess, tokenizer, pairs,
                        TrainingConfig(epochs=2, batch_size=4, warmup_steps=1, num_threads=1))
    assert result.steps == 4
    assert all(loss == loss for loss in result.epoch_losses)


@pytest.mark.slow  # training
def test_a_spent_time_budget_stops_training_after_the_step_in_flight(tiny_clip, colour_pairs):
    model, preprocess, tokenizer = tiny_clip()
    messages = []
    result = train_clip(model, preprocess, tokenizer, colour_pairs,
                        TrainingConfig(epochs=50, batch_size=4, max_train_seconds=1e-6, num_threads=1),
                        log=messages.append)
    assert result.stopped_by_time_budget and result.steps == 1 and len(result.epoch_losses) == 1
    assert any("time budget" in m for m in messages)


@pytest.mark.slow  # training
def test_frozen_image_tower_keeps_its_weights(tiny_clip, colour_pairs):
    model, preprocess, tokenizer = tiny_clip()
    visual_before = [p.detach().clone() for p in model.visual.parameters()]
    text_before = model.text_projection.detach().clone()
    train_clip(model, preprocess, tokenizer, colour_pairs,
               TrainingConfig(epochs=2, batch_size=8, warmup_steps=0, freeze="image", num_threads=1))
    assert all(torch.equal(a, b) for a, b in zip(visual_before, model.visual.parameters()))
    assert not torch.equal(text_before, model.text_projection)


@pytest.mark.slow  # training
def test_bf16_autocast_training_keeps_fp32_master_weights(tiny_clip, colour_pairs):
    model, preprocess, tokenizer = tiny_clip()
    messages = []
    result = train_clip(model, preprocess, tokenizer, colour_pairs,
                        TrainingConfig(epochs=6, batch_size=8, warmup_steps=0, augment_images=False,
                                       precision="bf16", num_threads=1), log=messages.append)
    assert (result.precision, result.autocast_dtype) == ("bf16 autocast", "bfloat16")
    assert {p.dtype for p in result.model.parameters()} == {torch.float32}
    assert all(math.isfinite(loss) for loss in result.epoch_losses)
    assert result.epoch_losses[-1] < result.epoch_losses[0]
    assert any("at bf16 autocast: set in the config" in m for m in messages)


@pytest.mark.slow  # training
def test_frozen_resnet_tower_keeps_its_batch_norm_statistics_and_layout(tmp_path, colour_pairs):
    config = tmp_path / "fsp-test-tiny-rn.json"
    config.write_text(json.dumps({**TINY, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8,
                                                         "head_width": 16}}))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("fsp-test-tiny-rn")
    before = {k: v.clone() for k, v in model.visual.state_dict().items()}
    train_clip(model, preprocess, open_clip.get_tokenizer("fsp-test-tiny-rn"), colour_pairs,
               TrainingConfig(epochs=2, batch_size=8, warmup_steps=0, freeze="image", num_threads=1))
    after = model.visual.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    open_clip.create_model("fsp-test-tiny-rn").load_state_dict(model.state_dict())


def test_training_refuses_fewer_than_two_pairs(tiny_clip, colour_pairs):
    model, preprocess, tokenizer = tiny_clip()
    with pytest.raises(ValueError, match="at least 2 pairs"):
        train_clip(model, preprocess, tokenizer, colour_pairs[:1], TrainingConfig(epochs=1))


def test_undecodable_image_is_named_by_its_pair(tiny_clip, colour_pairs):
    model, preprocess, tokenizer = tiny_clip()
    pairs = [*colour_pairs[:2], (b"not an image", "broken")]
    with pytest.raises(ValueError, match="pair 2"):
        train_clip(model, preprocess, tokenizer, pairs, TrainingConfig(epochs=1, batch_size=2))


@pytest.mark.slow  # training
def test_trained_model_retrieves_better_than_untrained(tiny_clip, colour_pairs):
    model, preprocess, tokenizer = tiny_clip()
    before = pairs_mrr(model, preprocess, tokenizer, colour_pairs)
    train_clip(model, preprocess, tokenizer, colour_pairs,
               TrainingConfig(epochs=15, batch_size=8, learning_rate=2e-3, warmup_steps=0,
                              augment_images=False, num_threads=1))
    assert pairs_mrr(model, preprocess, tokenizer, colour_pairs) > max(before, 2 * random_mrr(8))


def test_contrastive_loss_is_the_clip_loss_when_captions_differ():
    generator = torch.Generator().manual_seed(3)
    images = torch.nn.functional.normalize(torch.randn(6, 16, generator=generator), dim=1)
    texts = torch.nn.functional.normalize(torch.randn(6, 16, generator=generator), dim=1)
    scale = torch.tensor(14.3)
    ours = contrastive_loss(images, texts, scale, torch.arange(6))
    assert ours.item() == pytest.approx(ClipLoss()(images, texts, scale).item(), rel=1e-6)


def test_contrastive_loss_treats_identical_captions_as_positives():
    features = torch.eye(4)
    features[3] = features[2]  # items 2 and 3: the same picture under the same caption
    scale = torch.tensor(100.0)
    shared = contrastive_loss(features, features, scale, torch.tensor([0, 1, 2, 2]))
    assert shared.item() < 1e-3
    # told apart as distinct captions, each of the two identical pairs can at best split 50/50: ln 2 / 2
    distinct = contrastive_loss(features, features, scale, torch.arange(4))
    assert distinct.item() == pytest.approx(math.log(2) / 2, rel=1e-3)


def test_label_loss_leaves_out_unlabelled_images():
    generator = torch.Generator().manual_seed(5)
    images = torch.nn.functional.normalize(torch.randn(4, 8, generator=generator), dim=1)
    labels = torch.nn.functional.normalize(torch.randn(3, 8, generator=generator), dim=1)
    targets = torch.tensor([2, -1, 0, -1])
    expected = torch.nn.functional.cross_entropy(10 * images[[0, 2]] @ labels.T, torch.tensor([2, 0]))
    assert label_loss(images, labels, torch.tensor(10.0), targets).item() == pytest.approx(expected.item())
    assert label_loss(images, labels, torch.tensor(10.0), torch.full((4,), -1)).item() == 0.0


@pytest.mark.slow  # training
def test_training_with_labels_teaches_the_label_texts(tiny_clip, colour_pairs):
    model, preprocess, tokenizer = tiny_clip()
    names = list(COLOURS)
    labels = [{"colour": name, "article_type": None} for name in names]
    result = train_clip(model, preprocess, tokenizer, colour_pairs,
                        TrainingConfig(epochs=30, batch_size=8, learning_rate=2e-3, warmup_steps=0,
                                       augment_images=False, num_threads=1), labels=labels)
    with torch.inference_mode():
        images = torch.stack([preprocess(Image.open(io.BytesIO(image))) for image, _ in colour_pairs])
        scores = result.model.encode_image(images, normalize=True) @ result.model.encode_text(
            tokenizer(names), normalize=True).T
    assert (scores.argmax(dim=1) == torch.arange(len(names))).sum() >= 7


def test_labels_must_match_the_pairs(tiny_clip, colour_pairs):
    model, preprocess, tokenizer = tiny_clip()
    with pytest.raises(ValueError, match="3 label mappings for 8 pairs"):
        train_clip(model, preprocess, tokenizer, colour_pairs, TrainingConfig(epochs=1), labels=[{}] * 3)


def test_text_with_attributes_prefixes_non_empty_values_in_order():
    attributes = {"gender": "Men", "colour": "Black", "article_type": "Jackets"}
    description = "Puma Men Ferrari Black Fleece Jacket"
    assert text_with_attributes(description, attributes) == "Men Black Jackets: Puma Men Ferrari Black Fleece Jacket"
    assert text_with_attributes(description, {"gender": None, "colour": " "}) == description


def test_training_captions_follow_the_config():
    row = {"gender": "Women", "category": "Apparel/Topwear", "article_type": "Tops", "colour": "Pink"}
    assert training_captions("Pink Top", row, TrainingConfig()) == [
        "Pink Top", "Women Pink Tops: Pink Top", "Women Pink Tops", "Pink", "Tops"]
    assert training_captions("Pink Top", {}, TrainingConfig()) == ["Pink Top"]
    assert training_captions("Pink Top", row, TrainingConfig(augment_text_from_attributes=False)) == ["Pink Top"]


@pytest.mark.parametrize("field,value", [("freeze", "both"), ("precision", "fp8"), ("batch_size", 1),
                                         ("epochs", 0), ("learning_rate", 0.0), ("device", "tpu")])
def test_bad_config_values_are_named(field, value):
    with pytest.raises(ValueError, match=f"TrainingConfig.{field}"):
        TrainingConfig(**{field: value})
