"""Re-export the bundled generator weights in format dystream-generator-2 (2026-12-08).

The file holds the network only (the architecture config, no training recipe fields, no
auxiliary-head tensors) and its record names no machine path. Every tensor of the network
is written back as it was (fp16 -> float32 -> fp16 is exact; the motion statistics stay
float32), which the script checks before replacing the file.

    python lab/scripts/reexport_bundled_weights.py dystream/weights/generator-small.safetensors
"""

import json
import re
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from dystream.generator.weights import load_generator, read_metadata, save_weights

path = Path(sys.argv[1])
old_meta = read_metadata(path)
old = load_file(str(path))
model = load_generator(path, inference=False)
info = json.loads(old_meta["info"])


def portable(command: str | None) -> str | None:
    """Commands as recorded on the training machine, with its absolute paths made relative."""
    if command is None:
        return None
    return re.sub(r"/(?:work/main|tmp/r15)/", "", command)


for source in info.get("averaged_from", []):
    source["command"] = portable(source["command"])
info["command"] = portable(info["command"])
info["format_note"] = ("re-exported on 2026-12-08 in format dystream-generator-2: the network's tensors unchanged, "
                       "the training recipe and the auxiliary heads (future, phone and voice probes) left out")
tmp = path.with_name(path.name + ".new")
save_weights(model, tmp, info, dtype=torch.float16)
new = load_file(str(tmp))
assert set(new) == {k for k in old if not k.startswith(("future_probe.", "phone_probe.", "voice_probe."))}
for name, tensor in new.items():
    assert tensor.dtype == old[name].dtype and torch.equal(tensor, old[name]), name
assert "/work/" not in read_metadata(tmp)["info"] and "/tmp/" not in read_metadata(tmp)["info"]
tmp.replace(path)
print(f"{path}: {len(old)} -> {len(new)} tensors, every network tensor unchanged")
