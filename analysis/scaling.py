"""Critical exponents from log-log fits, with the leading finite-size corrections of the torus.

At criticality on an L x L torus the energy operator (Delta_eps = 1) has a non-zero mean
<eps> ~ 1/L; through the OPE sigma x sigma -> eps (and the stress tensor, Delta = 2) spin
correlators pick up relative corrections in powers of distance / L, so
kappa4(l) ~ l^(-1/2) (1 + c1 l/L + c2 (l/L)^2).  The fit regresses log|y| on (1, log x)
plus the correction terms, linearised.
"""

from __future__ import annotations

import numpy as np


def power_law_exponent(x, y, window, corrections=(), weights=None) -> tuple[float, np.ndarray]:
    """Exponent p of |y| ~ x^p (1 + sum_i c_i f_i(x)), fitted on window[0] <= x <= window[1].

    Linear least squares of log|y| on (1, log x, f_1(x), ...) for the callables f_i in
    `corrections`; `weights` are relative inverse variances of log|y| (e.g. modes per
    spectrum bin).  Returns (p, c); NaN when the window holds fewer points than parameters.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.abs(np.asarray(y, dtype=np.float64))
    sel = (x >= window[0]) & (x <= window[1]) & (x > 0) & (y > 0) & np.isfinite(y)
    n_par = 2 + len(corrections)
    if sel.sum() < n_par:
        return np.nan, np.full(len(corrections), np.nan)
    A = np.stack([np.ones(sel.sum()), np.log(x[sel])] + [f(x[sel]) for f in corrections], axis=1)
    w = np.ones(sel.sum()) if weights is None else np.sqrt(np.asarray(weights, dtype=np.float64)[sel])
    coef = np.linalg.lstsq(A * w[:, None], np.log(y[sel]) * w, rcond=None)[0]
    return float(coef[1]), coef[2:]
