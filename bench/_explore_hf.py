"""TEMPORARY exploration (to be deleted): batched-generation strategies on the tiny model."""
import copy, os, random, sys, time, warnings
import torch
torch.set_num_threads(int(os.environ.get("THREADS", "2")))
from transformers import StaticCache
sys.path.insert(0, "src")
from needlework.models.tiny import build_char_tokenizer, build_tiny_model
warnings.filterwarnings("ignore")
dev = os.environ.get("DEV", "cpu")
tok = build_char_tokenizer()
m = build_tiny_model(tok).to(dev).eval()
gen = copy.deepcopy(m.generation_config); gen.update(do_sample=False, pad_token_id=0, eos_token_id=[3])
rng = random.Random(0)
prompts = [[rng.randint(5, 100) for _ in range(rng.randint(1800, 2200))] for _ in range(16)]

def left(batch, N, static):
    W = max(map(len, batch)); B = len(batch)
    ids = torch.zeros(B, W, dtype=torch.long); mask = torch.zeros_like(ids)
    for r, p in enumerate(batch): ids[r, W-len(p):] = torch.tensor(p); mask[r, W-len(p):] = 1
    g = copy.copy(gen); g.max_new_tokens = N
    if static: g.cache_implementation = "static"
    out = m.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), generation_config=g)
    return out[:, W:].tolist()

def right(batch, N, static):
    W = max(map(len, batch)); B = len(batch)
    ids = torch.zeros(B, W, dtype=torch.long); mask = torch.zeros(B, W+1, dtype=torch.long)
    for r, p in enumerate(batch): ids[r, :len(p)] = torch.tensor(p); mask[r, :len(p)] = 1
    mask[:, W] = 1
    ids, mask = ids.to(dev), mask.to(dev)
    last = torch.tensor([len(p)-1 for p in batch], device=dev)
    uniq, inv = torch.unique(last, return_inverse=True)
    out = m(input_ids=ids, use_cache=True, logits_to_keep=uniq)
    first = out.logits[torch.arange(B, device=dev), inv].argmax(-1)
    if N == 1: return first[:, None].tolist()
    cache = out.past_key_values
    if static:
        sc = StaticCache(config=m.config, max_cache_len=W + N)
        for i, layer in enumerate(cache.layers):
            sc.layers[i].update(layer.keys, layer.values)
        cache = sc
    g = copy.copy(gen); g.max_new_tokens = N - 1
    o2 = m.generate(input_ids=torch.cat([ids, first[:, None]], 1), attention_mask=mask,
                    past_key_values=cache, generation_config=g)
    return torch.cat([first[:, None], o2[:, W+1:]], 1).tolist()

def trunc(r): return r[:r.index(3)] if 3 in r else r
def run(fn, bs, N, static):
    out = []
    for i in range(0, len(prompts), bs): out.extend(fn(prompts[i:i+bs], N, static))
    return [trunc(x) for x in out]
with torch.inference_mode():
    run(left, 2, 4, False); run(right, 2, 4, True); run(left, 2, 4, True)
    print(f"| N | strategy | bs | s (min of 3) | samples/s | equal to bs1 |  dev={dev} threads={torch.get_num_threads()}")
    print("|---|---|---|---|---|---|")
    for N in [int(x) for x in os.environ.get("NS", "16,64,200").split(",")]:
        ref = None
        for name, fn, static in (("left+dynamic", left, False), ("left+static", left, True),
                                 ("right+dynamic", right, False), ("right+static", right, True)):
            for bs in (1, 8, 16):
                if fn is right and bs == 1: continue
                ts = []
                for _ in range(3):
                    t = time.perf_counter(); res = run(fn, bs, N, static); ts.append(time.perf_counter() - t)
                if ref is None: ref = res
                print(f"| {N} | {name} | {bs} | {min(ts):.3f} | {len(prompts)/min(ts):.1f} | {res == ref} |", flush=True)
