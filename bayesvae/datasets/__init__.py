"""Data sets: embedded, synthetic with a known truth, and readers for standard files.

Nothing here downloads. ``digits`` is embedded in scikit-learn; ``linear_gaussian`` and
``bars`` simulate data whose generating parameters are returned alongside; the readers parse
files the user already has (MNIST IDX, Larochelle's binarized MNIST, Frey Face) and check them
byte for byte against their declared format. ``load`` maps a CLI argument to one of these.

Every function returns a :class:`Dataset`: a float32 matrix with one observation per row, plus
optional labels, image shape and column names.

Modules: :mod:`~bayesvae.datasets.record` (the :class:`Dataset` record),
:mod:`~bayesvae.datasets.embedded` (``digits``), :mod:`~bayesvae.datasets.synthetic`
(``linear_gaussian``, ``bars``), :mod:`~bayesvae.datasets.mnist`, :mod:`~bayesvae.datasets.frey`
and :mod:`~bayesvae.datasets.tables` (file readers) and :mod:`~bayesvae.datasets.loader`
(``load``).

References
----------
.. [1] LeCun, Y., Bottou, L., Bengio, Y. and Haffner, P. (1998). Gradient-based learning
   applied to document recognition. *Proc. IEEE* 86(11), 2278-2324. doi:10.1109/5.726791
.. [2] Salakhutdinov, R. and Murray, I. (2008). On the quantitative analysis of deep belief
   networks. *ICML*. doi:10.1145/1390156.1390266
.. [3] Larochelle, H. and Murray, I. (2011). The neural autoregressive distribution
   estimator. *AISTATS*, PMLR 15, 29-37.
.. [4] Kingma, D. P. and Welling, M. (2014). Auto-encoding variational Bayes. *ICLR*.
   arXiv:1312.6114
.. [5] Tipping, M. E. and Bishop, C. M. (1999). Probabilistic principal component analysis.
   *J. R. Stat. Soc. B* 61(3), 611-622. doi:10.1111/1467-9868.00196
.. [6] Griffiths, T. L. and Ghahramani, Z. (2005). Infinite latent feature models and the
   Indian buffet process. *NIPS 18*; and (2011) The Indian buffet process: an introduction
   and review. *JMLR* 12, 1185-1224.
.. [7] Alpaydin, E. and Kaynak, C. (1998). Optical recognition of handwritten digits. UCI
   Machine Learning Repository. doi:10.24432/C50P49
"""

from __future__ import annotations

from bayesvae.datasets.embedded import digits
from bayesvae.datasets.frey import read_frey_face
from bayesvae.datasets.loader import load
from bayesvae.datasets.mnist import read_binarized_mnist, read_mnist_idx
from bayesvae.datasets.record import Dataset
from bayesvae.datasets.synthetic import bars, linear_gaussian

__all__ = [
    "Dataset",
    "bars",
    "digits",
    "linear_gaussian",
    "load",
    "read_binarized_mnist",
    "read_frey_face",
    "read_mnist_idx",
]
