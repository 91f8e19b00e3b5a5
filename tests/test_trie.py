"""The item trie against a plain dict-of-dicts reference, on random and hand-made sequences."""
import random

import pytest
import torch

from bearrec.errors import ConfigError, DataError
from bearrec.trie import ItemTrie


def reference(sequences):
    root: dict = {}
    for seq in sequences:
        node = root
        for tok in seq:
            node = node.setdefault(tok, {})
    return root


def ref_allowed(root, prefix):
    node = root
    for tok in prefix:
        if tok not in node:
            return []
        node = node[tok]
    return sorted(node)


@pytest.mark.parametrize("seed", range(5))
def test_allowed_matches_reference_on_random_sequences(seed):
    rng = random.Random(seed)
    vocab = rng.randint(2, 12)
    seqs = [[rng.randrange(vocab) for _ in range(rng.randint(1, 6))] for _ in range(rng.randint(1, 60))]
    trie = ItemTrie.from_sequences(seqs)
    ref = reference(seqs)
    for seq in seqs:
        for t in range(len(seq) + 1):
            assert trie.allowed(seq[:t]) == ref_allowed(ref, seq[:t])
    for _ in range(50):
        prefix = [rng.randrange(vocab + 1) for _ in range(rng.randint(0, 4))]
        assert trie.allowed(prefix) == ref_allowed(ref, prefix)
    # every sequence maps back to exactly the items that share it
    for i, seq in enumerate(seqs):
        assert str(i) in trie.items_of(seq)
        assert sorted(trie.items_of(seq)) == sorted(str(j) for j, s in enumerate(seqs) if s == seq)


def test_vectorised_masks_and_steps_agree_with_allowed():
    rng = random.Random(7)
    seqs = [[rng.randrange(9) for _ in range(rng.randint(1, 5))] + [9] for _ in range(40)]
    trie = ItemTrie.from_sequences(seqs)
    nodes = torch.arange(-1, trie.num_nodes)
    mask = trie.allowed_mask(nodes, 10)
    tokens, valid = trie.padded_children(nodes)
    for row, node in enumerate(nodes.tolist()):
        expected = [] if node < 0 else trie.edge_token[trie.child_ptr[node]:trie.child_ptr[node + 1]].tolist()
        assert mask[row].nonzero().flatten().tolist() == expected
        assert tokens[row][valid[row]].tolist() == expected
        for tok in range(10):
            child = int(trie.step(torch.tensor([node]), torch.tensor([tok]))[0])
            assert (child >= 0) == (tok in expected)
            if child >= 0:
                assert trie.depth[child] == trie.depth[max(node, 0)] + 1


def test_duplicates_prefixes_and_persistence(tmp_path):
    seqs = [[1, 2, 3], [1, 2], [1, 2, 3], [4]]
    trie = ItemTrie.from_sequences(seqs, ["a", "b", "c", "d"])
    assert trie.items_of([1, 2, 3]) == ["a", "c"]
    assert trie.items_of([1, 2]) == ["b"]
    assert trie.allowed([1, 2]) == [3]
    assert trie.items_of([1]) == []
    trie.save(tmp_path / "trie.pt")
    again = ItemTrie.load(tmp_path / "trie.pt")
    assert again.allowed([1]) == [2] and again.items_of([4]) == ["d"] and again.item_ids == trie.item_ids


def test_errors():
    with pytest.raises(DataError, match="empty token sequence"):
        ItemTrie.from_sequences([[1], []], ["a", "b"])
    trie = ItemTrie.from_sequences([[5, 6]])
    with pytest.raises(ConfigError, match="vocabulary"):
        trie.allowed_mask(torch.tensor([1]), 4)


def test_large_catalog_is_compact():
    rng = random.Random(0)
    seqs = [[rng.randrange(50000) for _ in range(12)] for _ in range(20000)]
    trie = ItemTrie.from_sequences(seqs)
    n_bytes = sum(t.numel() * t.element_size() for t in
                  (trie.child_ptr, trie.edge_token, trie.edge_child, trie.item_ptr, trie.item_index, trie.depth))
    # flat int64 arrays: about 6 numbers per token, no per-node Python objects
    assert n_bytes < 20000 * 12 * 8 * 7
    assert trie.allowed(seqs[123][:5]) == sorted({s[5] for s in seqs if s[:5] == seqs[123][:5]})


def test_every_nodes_parent_token_path_and_item_count_match_its_sequence():
    from collections import Counter

    from decoding_fixtures import random_sequences

    seqs = random_sequences(80, 64, seed=11)
    trie = ItemTrie.from_sequences(seqs)
    counts = Counter(tuple(s) for s in seqs)
    for seq in seqs:
        for j in range(1, len(seq) + 1):
            node = trie.node_of(seq[:j])
            assert int(trie.parent[node]) == trie.node_of(seq[:j - 1]) and int(trie.token[node]) == seq[j - 1]
            assert trie.sequences(torch.tensor([node])) == [list(seq[:j])]
        assert int(trie.item_counts(torch.tensor([trie.node_of(seq)]))[0]) == counts[tuple(seq)]
    assert int(trie.parent[0]) == -1 and int(trie.token[0]) == -1
    assert trie.item_counts(torch.tensor([-1])).tolist() == [0]


def test_chain_structure_of_the_trie():
    trie = ItemTrie.from_sequences([[1, 2, 3, 9], [1, 2, 4, 9], [5, 6, 7, 9], [5, 9]])
    node = {tuple(s): trie.node_of(s) for s in ([1], [1, 2], [1, 2, 3], [1, 2, 3, 9], [5], [5, 6], [5, 6, 7, 9])}
    assert trie.only_child[node[(1,)]] == node[(1, 2)] and trie.only_child[node[(1, 2)]] == -1
    assert trie.chain_leaf[node[(1, 2, 3)]] == node[(1, 2, 3, 9)] and trie.chain_leaf[node[(1,)]] == -1
    assert trie.chain_leaf[node[(5, 6)]] == node[(5, 6, 7, 9)] and trie.chain_leaf[node[(5,)]] == -1
