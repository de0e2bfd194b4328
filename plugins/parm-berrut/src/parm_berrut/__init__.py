"""Berrut rational-interpolation coders for parm (ApproxIFER, Soleymani et al., AAAI 2022).

Training-free: the coded queries are answered by the unmodified deployed model F.

- :class:`~parm_berrut.systematic.BerrutEncoder` / :class:`~parm_berrut.systematic.BerrutDecoder`
  (entry points ``berrut``): the *systematic* mode. The k originals are served as is; r = S parity
  queries are Berrut combinations of them, answered by F itself; only missing outputs are estimated.
- :class:`~parm_berrut.approxifer.ApproxIFERCode`: the paper's mode. N = K + S coded queries, every
  one of the K predictions approximated from any K of the N answers (optionally excluding up to E
  wrong answers). It does not fit parm's Encoder/Decoder contract (no query is an original), so it
  is evaluated through :func:`parm.evaluation.evaluate_coded_computation`.
"""

from parm_berrut.approxifer import ApproxIFERCode
from parm_berrut.berrut import berrut_basis, chebyshev_first_kind, chebyshev_second_kind
from parm_berrut.systematic import BerrutDecoder, BerrutEncoder, systematic_nodes

__all__ = [
    "ApproxIFERCode",
    "BerrutDecoder",
    "BerrutEncoder",
    "berrut_basis",
    "chebyshev_first_kind",
    "chebyshev_second_kind",
    "systematic_nodes",
]
