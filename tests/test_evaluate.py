"""The unbiased pass@k estimator (Chen et al. 2021) against a brute-force count."""

from itertools import combinations

import pytest

from grpo_cli.training.evaluate import pass_at_k


@pytest.mark.parametrize("n, c, k", [(4, 0, 1), (4, 1, 1), (4, 2, 2), (5, 2, 3), (8, 3, 4), (6, 6, 2), (10, 1, 10)])
def test_pass_at_k_equals_the_fraction_of_k_subsets_with_a_success(n, c, k):
    samples = [True] * c + [False] * (n - c)
    subsets = list(combinations(samples, k))
    assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_pass_at_1_is_the_mean():
    assert pass_at_k(16, 5, 1) == pytest.approx(5 / 16)
