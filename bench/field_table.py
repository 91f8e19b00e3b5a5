"""The "BEAR against the field" table of docs/results.md from a report's summary.json: each method and decoding's
HR@5, HR@10, NDCG@5, NDCG@10 and its paired bootstrap against BEAR (beam search) on NDCG@10.

    bearrec report RUN_DIR... --output REPORT && python bench/field_table.py REPORT/summary.json
"""
import json, sys
s = json.load(open(sys.argv[1]))
pairs = {}
for p in s['paired_bootstrap']:
    a, b = p['comparison'].split(' - ')
    if 'bear' not in (a, b) or p['metric'] != 'ndcg@10':
        continue
    other, sign = (b, -1) if a == 'bear' else (a, 1)
    lo, hi = sorted([sign * p['low'], sign * p['high']])
    pv = '< 0.001' if p['p_value'] < 0.001 else f"{p['p_value']:.3f}"
    pairs[other] = f"{sign * p['mean_diff']:+.4f} [{lo:+.4f}, {hi:+.4f}], p {pv}"
print("| method | decoding | HR@5 | HR@10 | NDCG@5 | NDCG@10 | NDCG@10 − BEAR's (95% CI, p) |")
print("|---|---|---|---|---|---|---|")
for name, m in s['methods'].items():
    base, _, mode = name.partition(' · ')
    mode = '–' if m.get('kind') == 'baseline' else mode
    x = m['metrics']
    def g(k):
        v = x.get(k)
        v = v['mean'] if isinstance(v, dict) else v
        return f"{v:.4f}" if isinstance(v, (int, float)) else "–"
    print(f"| {base} | {mode or 'beam'} | {g('hr@5')} | {g('hr@10')} | {g('ndcg@5')} | {g('ndcg@10')} | {pairs.get(name, '(reference)' if name == 'bear' else '–')} |")
