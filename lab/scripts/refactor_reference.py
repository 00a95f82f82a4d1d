"""Reference motion for the one-step-path refactor (2026-12-08): run at commit 555a611.

    git worktree add /tmp/oldtree 555a611 && cd /tmp/oldtree && python lab/scripts/refactor_reference.py DATA ref.npz

DATA: `dystream data synth --hours 1.3 --split-hours train=0.05,val=0.05,test=1.2` (seed 0). Writes the bundled
weights' motion on the first 60 s of every test conversation, both parties, seeds 0-2: batched (the evaluation
path, all streams), offline single clips and streams in random chunks (first 4 conversations).
"""
import sys, time
import numpy as np, torch
from dystream.data.schema import iter_conversations
from dystream.evaluation.core import neutral_frame
from dystream.generator.weights import load_generator
from dystream.generator.inference import generate_motion, generate_motion_batch
from dystream.streaming import StreamingSession

data, out = sys.argv[1], sys.argv[2]
seconds, n_single = 60, 4
model = load_generator(None, "cpu")
convs = list(iter_conversations(data, "test"))
n = seconds * 16000
items, keys = [], []
for ci, c in enumerate(convs):
    for party in (0, 1):
        for seed in (0, 1, 2):
            items.append((c.audio[party][:n], c.audio[1 - party][:n], neutral_frame(c, party), seed))
            keys.append((ci, party, seed))
res = {}
t = time.time()
batch = generate_motion_batch(model, items, batch_size=64)
print("batch", time.time() - t, flush=True)
for k, m in zip(keys, batch):
    res["batch_%d_%d_%d" % k] = m
torch.set_num_threads(1)
t = time.time()
for k, it in zip(keys, items):
    if k[0] >= n_single:
        continue
    res["offline_%d_%d_%d" % k] = generate_motion(model, it[0], it[1], it[2], seed=it[3])
    s = StreamingSession(model, it[2], seed=it[3])
    rng = np.random.default_rng(k[0] * 10 + k[1])
    frames = []
    pos = [0, 0]
    audio = (it[0], it[1])
    while pos[0] < n or pos[1] < n:
        st = int(rng.integers(2))
        if pos[st] >= n: st = 1 - st
        size = int(rng.integers(1, 3000))
        frames += s.feed(st, audio[st][pos[st]:pos[st] + size]); pos[st] += size
    frames += s.flush()
    res["stream_%d_%d_%d" % k] = np.stack([f.motion for f in frames])
print("single+stream", time.time() - t, flush=True)
np.savez_compressed(out, **res)
