"""The objectives against hand-written formulas, the gathered (trie) path against the dense one, and the
gradient relation between BEAR's weighted (reference) form and its explicit L_reg form."""
import math
import random

import pytest
import torch
import torch.nn.functional as F

from bearrec import losses
from bearrec.errors import ConfigError
from bearrec.trie import ItemTrie


def _random_case(seed, n=12, v=9, min_allowed=1):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, v, generator=g) * 3
    allowed = torch.rand(n, v, generator=g) < 0.5
    for i in range(n):  # at least min_allowed allowed, target among them
        allowed[i, torch.randperm(v, generator=g)[:min_allowed]] = True
    targets = torch.stack([row.nonzero().flatten()[torch.randint(int(row.sum()), (1,), generator=g)][0]
                           for row in allowed])
    return logits, targets, allowed


def _manual_bear(logits, targets, allowed, num_beams, lam, xi, tau):
    out = []
    for z, t, a in zip(logits.tolist(), targets.tolist(), allowed.tolist()):
        idx = [j for j in range(len(z)) if a[j]]
        denom = sum(math.exp(z[j] / tau) for j in idx)
        probs = sorted((math.exp(z[j] / tau) / denom for j in idx), reverse=True)
        p = math.exp(z[t] / tau) / denom
        beta = probs[num_beams - 1] if len(probs) >= num_beams else probs[-1]
        delta = math.log(beta) - math.log(p)
        out.append(-math.log(p) + lam * -math.log1p(math.exp(-delta / xi)))
    return torch.tensor(out)


def test_sft_and_msl_match_formulas():
    logits, targets, allowed = _random_case(0)
    assert torch.allclose(losses.sft_loss(logits, targets), F.cross_entropy(logits, targets, reduction="none"))
    tau = 0.7
    z = (logits / tau).masked_fill(~allowed, -1e9)
    assert torch.allclose(losses.msl_loss(logits, targets, allowed, tau),
                          F.cross_entropy(z, targets, reduction="none"), atol=1e-5)
    # MSL with everything allowed at tau=1 is SFT; a single allowed child gives loss 0 (p = 1)
    assert torch.allclose(losses.msl_loss(logits, targets, torch.ones_like(allowed)), losses.sft_loss(logits, targets))
    one = torch.zeros_like(allowed)
    one[torch.arange(len(targets)), targets] = True
    assert torch.allclose(losses.msl_loss(logits, targets, one), torch.zeros(len(targets)))


@pytest.mark.parametrize("seed", range(4))
def test_pruning_margin_is_the_same_under_full_and_masked_normalisation(seed):
    """BEAR on an SFT base takes Delta_t over the valid children: the normaliser cancels in log beta - log p."""
    logits, targets, allowed = _random_case(seed, min_allowed=2)
    _, masked = losses.pruning_margin(logits, targets, allowed, num_beams=2)
    full = F.log_softmax(logits, -1)
    manual = []
    for lp, t, a in zip(full, targets, allowed):
        valid = lp[a].sort(descending=True).values
        beta = valid[1] if len(valid) >= 2 else valid[-1]
        manual.append(beta - lp[t])
    assert torch.allclose(masked, torch.stack(manual), atol=1e-5)
    assert torch.allclose(losses.bear_regularizer(masked, 1.5), F.logsigmoid(torch.stack(manual) / 1.5), atol=1e-6)


@pytest.mark.parametrize("num_beams", [1, 2, 3, 20])
def test_bear_matches_formula_including_fewer_than_b_children(num_beams):
    logits, targets, allowed = _random_case(num_beams)
    got = losses.bear_loss(logits, targets, allowed, num_beams=num_beams, lam=0.4, xi=1.7, tau=0.9)
    assert torch.allclose(got, _manual_bear(logits, targets, allowed, num_beams, 0.4, 1.7, 0.9), atol=1e-5)
    # without a mask the base is SFT and beta the B-th largest of the full softmax
    full = torch.ones_like(allowed)
    got = losses.bear_loss(logits, targets, None, num_beams=num_beams, lam=0.4, xi=1.7)
    assert torch.allclose(got, _manual_bear(logits, targets, full, num_beams, 0.4, 1.7, 1.0), atol=1e-5)


def test_bear_threshold_is_detached_unless_asked():
    logits, targets, allowed = _random_case(3)
    grads = []
    for detach in (True, False):
        x = logits.clone().requires_grad_()
        losses.bear_loss(x, targets, allowed, num_beams=2, detach_threshold=detach).sum().backward()
        grads.append(x.grad)
    x = logits.clone().requires_grad_()
    log_probs = F.log_softmax(x.masked_fill(~allowed, float("-inf")), -1)
    log_p = log_probs.gather(1, targets[:, None]).squeeze(1)
    k = allowed.sum(1)
    top2 = log_probs.topk(2, -1).values[:, 1]
    smallest = log_probs.masked_fill(~allowed, float("inf")).min(-1).values
    log_beta = torch.where(k >= 2, top2, smallest).detach()
    (-log_p + 0.25 * F.logsigmoid((log_beta - log_p) / 2.75)).sum().backward()
    assert torch.allclose(grads[0], x.grad, atol=1e-6)
    assert not torch.allclose(grads[0], grads[1], atol=1e-4)


def test_pruned_tokens_are_pushed_up():
    """A step where the target is outside the top B: the BEAR term's gradient raises its logit."""
    logits = torch.tensor([[5.0, 4.0, 3.0, -2.0]], requires_grad=True)
    reg = losses.bear_loss(logits, torch.tensor([3]), num_beams=2) - losses.sft_loss(logits, torch.tensor([3]))
    reg.sum().backward()
    assert logits.grad[0, 3] < 0  # gradient descent increases the target's logit


def test_weighted_form_has_the_gradient_of_msl_plus_lam_xi_lreg():
    """d/dz [CE + lam*xi*log sig(Delta/xi)] = (1 + lam*sig(-Delta/xi)) dCE/dz = w dCE/dz (beta detached), so
    grad sum_t (w_t / W) CE_t = (1/W) grad sum_t [CE_t + lam*xi*log sig(Delta_t/xi)], W = sum of w over tokens
    with more than one valid child (single-child tokens have CE = 0 and no gradient either way)."""
    lam, xi, b = 0.25, 2.75, 3
    logits, targets, allowed = _random_case(11, n=20, v=10)
    allowed[0] = False
    allowed[0, targets[0]] = True  # one single-child token
    x1 = logits.clone().requires_grad_()
    losses.bear_weighted_loss(x1, targets, allowed, num_beams=b, lam=lam, xi=xi).sum().backward()
    x2 = logits.clone().requires_grad_()
    ce, delta = losses.pruning_margin(x2, targets, allowed, num_beams=b)
    (ce + lam * xi * F.logsigmoid(delta / xi)).sum().backward()
    _, w = losses.bear_weights(logits, targets, allowed, num_beams=b, lam=lam, xi=xi)
    W = w[allowed.sum(1) > 1].sum()
    assert torch.allclose(x1.grad * W, x2.grad, atol=1e-5)
    # so the weighted form with lam equals the explicit bear_loss with lam * xi, up to 1/W
    x3 = logits.clone().requires_grad_()
    losses.bear_loss(x3, targets, allowed, num_beams=b, lam=lam * xi, xi=xi).sum().backward()
    assert torch.allclose(x3.grad, x2.grad, atol=1e-5)
    # the normalised weights sum to one over multi-child tokens; the single-child token gets none
    weights = losses.bear_weighted_loss(logits, targets, allowed, num_beams=b, lam=lam, xi=xi) / ce.detach()
    assert weights[0].item() == 0 or math.isnan(weights[0].item())
    assert torch.isclose(weights[1:].sum(), torch.tensor(1.0), atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_gathered_children_equal_dense_masks(seed):
    rng = random.Random(seed)
    vocab = 30
    seqs = [[rng.randrange(1, vocab) for _ in range(rng.randint(1, 4))] + [0] for _ in range(25)]
    trie = ItemTrie.from_sequences(seqs)
    prefixes = [(s[:k], s[k]) for s in seqs for k in range(len(s))]
    nodes = torch.tensor([trie.node_of(p) for p, _ in prefixes])
    targets = torch.tensor([t for _, t in prefixes])
    logits = torch.randn(len(prefixes), vocab, generator=torch.Generator().manual_seed(seed))
    dense = trie.allowed_mask(nodes, vocab)
    children, valid = trie.padded_children(nodes)
    for name, kw in [("msl_loss", {"tau": 0.8}), ("bear_loss", {"num_beams": 2, "lam": 0.3}),
                     ("bear_weighted_loss", {"num_beams": 2})]:
        fn = getattr(losses, name)
        xd = logits.clone().requires_grad_()
        xg = logits.clone().requires_grad_()
        ld = fn(xd, targets, dense, **kw)
        h, col = losses.gather_children(xg, targets, children, valid)
        lg = fn(h, col, valid, **kw)
        assert torch.allclose(ld, lg, atol=1e-5), name
        ld.sum().backward()
        lg.sum().backward()
        assert torch.allclose(xd.grad, xg.grad, atol=1e-6), name


def test_direct_loss_matches_formula_and_ignores_missing_thresholds():
    step_logp = torch.tensor([[-0.5, -1.0, -0.2], [-2.0, -0.1, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    thr = torch.tensor([[-1.0, -1.2, float("-inf")], [-1.5, -3.0, -1.0]])
    got = losses.direct_loss(step_logp, mask, thr, xi=2.0)
    cum = [[-0.5, -1.5, -1.7], [-2.0, -2.1, 0.0]]
    for r in range(2):
        for t in range(3):
            if not mask[r, t]:
                assert got[r, t] == 0
                continue
            want = 0.0 if thr[r, t] == float("-inf") else math.log1p(math.exp(-(cum[r][t] - thr[r, t].item()) / 2.0))
            assert math.isclose(got[r, t].item(), want, abs_tol=1e-6)


def test_errors():
    logits, targets, allowed = _random_case(5)
    with pytest.raises(ConfigError, match="num_beams"):
        losses.bear_loss(logits, targets, allowed, num_beams=0)
    allowed[0] = False
    allowed[0, (targets[0] + 1) % allowed.shape[1]] = True
    with pytest.raises(ConfigError, match="not among the allowed"):
        losses.msl_loss(logits, targets, allowed)
    with pytest.raises(ConfigError, match="not a trie child"):
        losses.gather_children(logits[:1], torch.tensor([5]), torch.tensor([[1, 2]]), torch.tensor([[True, True]]))
