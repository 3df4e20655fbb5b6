"""GREAT (Sinha et al., 2018) is deliberately *not* provided as a loss weighting.

Sinha, Chen, Badrinarayanan & Rabinovich, "Gradient Adversarial Training of Neural Networks",
arXiv:1806.08028. For multi-task learning, GREAT trains an auxiliary *adversarial network* that
receives the gradient tensor of each task's loss with respect to the shared feature and tries to
tell which task it came from; the gradient of that auxiliary loss is reversed and passed back into
the main network (a second-order term: the model is trained so that its task gradients become
statistically indistinguishable). It is not a rule that maps losses to per-task weights, and it
does not fit the :class:`~mtlsearch.weighting.base.Weighting` contract cleanly:

* the auxiliary network's input size is the shared feature's size, which a weighting does not know
  when it is built (``__init__`` only receives the task names), while the trainer builds the
  optimizer, including the weighting's parameters, before the first step, so it cannot be created
  lazily;
* the adversarial term needs double back-propagation through the per-task gradients
  (``create_graph=True``) and a gradient-reversal between two optimisation problems, plus its own
  architecture and trade-off hyperparameters, none of which the paper fixes for a generic network;
* there is no shared feature at all for single-task and early-splitting trees.

The simplification sometimes called "GREAT-style" -- weights inversely proportional to each
task's gradient norm on the shared parameters -- is a plain gradient-magnitude normalisation,
not the method of the paper; registering it under the name ``great`` would misattribute it. The
related, properly attributed methods here are ``gradnorm`` (learned weights that equalise
gradient norms) and the gradient aggregators (``imtl_g``, ``mgda``, ``pcgrad``...).
"""
