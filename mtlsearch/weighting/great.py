"""GREAT (Sinha et al., 2018, arXiv:1806.08028) is deliberately *not* provided as a loss weighting.

It trains an adversarial network on the task gradients, which does not fit the
:class:`~mtlsearch.weighting.base.Weighting` contract; see docs/weighting.md#great-not-provided.
"""
