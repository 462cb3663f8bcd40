"""Export a sentence-transformers model folder to ONNX the way Hugging Face exports look, for the
libraries sutra is compared with (fastembed reads ``model.onnx`` beside the tokenizer files).

The graph is the plain transformer (inputs ``input_ids``, ``attention_mask``, ``token_type_ids``;
output ``last_hidden_state``), exported by torch from the same safetensors sutra loads, like the
``Qdrant/all-MiniLM-L6-v2-onnx`` files fastembed downloads by default. Needs torch and transformers.

    python bench/export_hf_onnx.py MODEL_FOLDER OUT_FOLDER
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def export(model_folder: Path, out: Path) -> Path:
    import torch
    from transformers import AutoModel

    out.mkdir(parents=True, exist_ok=True)
    for item in model_folder.iterdir():
        if item.is_file() and item.suffix in (".json", ".txt"):
            shutil.copy2(item, out / item.name)
    encoder = AutoModel.from_pretrained(str(model_folder), attn_implementation="eager").eval()

    class LastHiddenState(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=token_type_ids).last_hidden_state

    model = LastHiddenState().eval()
    ids = torch.ones((2, 16), dtype=torch.long)
    # Padding in the example: a mask of all ones lets the tracer drop the masking code.
    mask = torch.ones((2, 16), dtype=torch.long)
    mask[1, 9:] = 0
    types = torch.zeros((2, 16), dtype=torch.long)
    dynamic = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(
            model,
            (ids, mask, types),
            str(out / "model.onnx"),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic,
                          "token_type_ids": dynamic, "last_hidden_state": dynamic},
            opset_version=17,
            dynamo=False,
        )
    return out / "model.onnx"


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(export(Path(sys.argv[1]), Path(sys.argv[2])))
