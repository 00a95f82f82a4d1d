"""New code against refactor_reference.py's motion (2026-12-08): max |difference| per path, as JSON.

    python lab/scripts/refactor_check.py DATA ref.npz
"""
import sys, time, json
import numpy as np, torch
from dystream.data.schema import iter_conversations
from dystream.evaluation.core import neutral_frame
from dystream.generator.weights import load_generator
from dystream.generator.offline import generate_motion, generate_motions
from dystream.streaming import StreamingSession

data, refpath = sys.argv[1], sys.argv[2]
n_single = 4
model = load_generator(None, "cpu")
convs = list(iter_conversations(data, "test"))
ref = np.load(refpath)
n = 60 * 16000
items, keys = [], []
for ci, c in enumerate(convs):
    for party in (0, 1):
        for seed in (0, 1, 2):
            items.append((c.audio[party][:n], c.audio[1 - party][:n], neutral_frame(c, party), seed))
            keys.append((ci, party, seed))
out = {}
t = time.time()
batch = generate_motions(model, items, batch_size=64)
out["batch_seconds"] = time.time() - t
out["new_batch_vs_old_batch"] = max(float(np.abs(m - ref["batch_%d_%d_%d" % k]).max()) for k, m in zip(keys, batch))
out["new_batch_vs_old_offline"] = max(float(np.abs(m - ref["offline_%d_%d_%d" % k]).max())
                                      for k, m in zip(keys, batch) if k[0] < n_single)
out["old_batch_vs_old_offline"] = max(float(np.abs(ref["batch_%d_%d_%d" % k] - ref["offline_%d_%d_%d" % k]).max())
                                      for k in keys if k[0] < n_single)
worst_off = worst_stream = 0.0
for k, it in zip(keys, items):
    if k[0] >= n_single:
        continue
    off = generate_motion(model, it[0], it[1], it[2], seed=it[3])
    worst_off = max(worst_off, float(np.abs(off - ref["offline_%d_%d_%d" % k]).max()))
    s = StreamingSession(model, it[2], seed=it[3])
    rng = np.random.default_rng(k[0] * 10 + k[1] + 1000)
    frames, pos, audio = [], [0, 0], (it[0], it[1])
    while pos[0] < n or pos[1] < n:
        st = int(rng.integers(2))
        if pos[st] >= n: st = 1 - st
        size = int(rng.integers(1, 3000))
        frames += s.feed(st, audio[st][pos[st]:pos[st] + size]); pos[st] += size
    frames += s.flush()
    worst_stream = max(worst_stream, float(np.abs(np.stack([f.motion for f in frames]) - ref["stream_%d_%d_%d" % k]).max()))
out["new_offline_vs_old_offline"] = worst_off
out["new_stream_vs_old_stream"] = worst_stream
out["threads"] = torch.get_num_threads()
print(json.dumps(out, indent=1))
