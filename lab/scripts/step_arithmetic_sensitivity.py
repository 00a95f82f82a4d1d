"""How much does a change of attention arithmetic in the frame step move the bundled motion? (2026-12-08; at 555a611)

    cd /tmp/oldtree && python lab/scripts/step_arithmetic_sensitivity.py DATA ref.npz
"""
import sys, time
import numpy as np, torch
import torch.nn.functional as F
from dystream.data.schema import iter_conversations
from dystream.evaluation.core import neutral_frame
from dystream.generator.weights import load_generator
from dystream.generator.inference import generate_motion, generate_motion_batch
from dystream.generator import transformer as T

torch.set_num_threads(1)
model = load_generator(None, "cpu")
convs = list(iter_conversations(sys.argv[1], "test"))[:2]
n = 60 * 16000
ref = np.load(sys.argv[2])
items = [(c.audio[p][:n], c.audio[1-p][:n], neutral_frame(c, p), s, (ci, p, s)) for ci, c in enumerate(convs) for p in (0, 1) for s in (0,)]

def run(tag):
    worst = 0
    for a, b, anc, s, k in items:
        m = generate_motion(model, a, b, anc, seed=s)
        d = np.abs(m - ref["offline_%d_%d_%d" % k]).max()
        worst = max(worst, d)
    print(tag, "max diff vs old offline", worst, flush=True)

run("unchanged")
for a, b, anc, s, k in items:
    print("old batch vs old offline", k, np.abs(ref["batch_%d_%d_%d" % k] - ref["offline_%d_%d_%d" % k]).max(),
          "stream vs offline", np.abs(ref["stream_%d_%d_%d" % k] - ref["offline_%d_%d_%d" % k]).max())

orig = T.Block.step
def step_attend(self, x, layer_keys, layer_values, slot, cos, sin, mask):
    b = x.shape[0]
    qkv = self.qkv(self.attn_norm(x)).view(b, 3, self.heads, self.head_dim)
    qk = T.rotate(qkv[:, :2], cos, sin)
    layer_keys[:, :, slot] = qk[:, 1]
    layer_values[:, :, slot] = qkv[:, 2]
    q = qk[:, 0, :, None]
    logits = (q @ layer_keys.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    att = torch.softmax(logits, -1) @ layer_values
    return self._finish(x, att)
T.Block.step = step_attend
run("explicit matmul softmax (anchor in slot 0)")

def step_unified(self, x, layer_keys, layer_values, slot, cos, sin, mask):
    b = x.shape[0]
    qkv = self.qkv(self.attn_norm(x)).view(b, 3, self.heads, self.head_dim)
    qk = T.rotate(qkv[:, :2], cos, sin)
    layer_keys[:, :, slot] = qk[:, 1]
    layer_values[:, :, slot] = qkv[:, 2]
    q_rot = qk[:, 0, :, None]
    q = qkv[:, 0, :, None]
    # the anchor's unrotated key is what the ring's slot 0 holds before re-rotation: recover from cache attr
    ak = self._anchor_k
    frames_k, frames_v = layer_keys[:, :, 1:], layer_values[:, :, 1:]
    m = None if mask is None else mask[:, 1:]
    if m is None:
        m = torch.ones(1, frames_k.shape[2], dtype=torch.bool)
    out = T.attend(q_rot, q, frames_k, frames_v, ak, layer_values[:, :, :1], m)
    return self._finish(x, out)

orig_step_tr = T.FrameTransformer.step
def tr_step(self, prev, fused, cache):
    for i, blk in enumerate(self.blocks):
        blk._anchor_k = cache.anchor_keys[i]
    return orig_step_tr(self, prev, fused, cache)
T.FrameTransformer.step = tr_step
T.Block.step = step_unified
run("unified attend (anchor logit from the plain query)")

def step_sdpa_mask(self, x, layer_keys, layer_values, slot, cos, sin, mask):
    b = x.shape[0]
    qkv = self.qkv(self.attn_norm(x)).view(b, 3, self.heads, self.head_dim)
    qk = T.rotate(qkv[:, :2], cos, sin)
    layer_keys[:, :, slot] = qk[:, 1]
    layer_values[:, :, slot] = qkv[:, 2]
    if mask is None:
        mask = torch.ones(1, layer_keys.shape[2], dtype=torch.bool)
    attended = F.scaled_dot_product_attention(qk[:, 0, :, None], layer_keys, layer_values, attn_mask=mask[:, None, None] if mask.dim()==2 else mask)
    return self._finish(x, attended)
T.FrameTransformer.step = orig_step_tr
T.Block.step = step_sdpa_mask
run("SDPA with an always-given mask")
