"""Critical exponents from log-log fits, with the leading finite-size correction of the torus.

At criticality on an L x L torus the energy operator (Delta_eps = 1) has a non-zero mean
<eps> ~ 1/L, and the OPE sigma x sigma -> eps turns it into a relative correction
~ (distance / L) to every spin correlator: kappa4(l) ~ l^(-1/2) (1 + c l/L) and, in
wavenumber space (k in units of 1/side, k = qL), S(k) ~ k^(-7/4) (1 + b/k).  The fits below
regress log|y| on (1, log x) and optionally that correction term, linearised.
"""

from __future__ import annotations

import numpy as np


def power_law_exponent(x, y, window, correction=None, weights=None) -> tuple[float, float]:
    """Exponent p of |y| ~ x^p (1 + c * correction(x)) fitted on window[0] <= x <= window[1].

    Linear least squares of log|y| on (1, log x[, correction(x)]); `weights` are relative
    inverse variances of log|y| (e.g. modes per spectrum bin).  Returns (p, c) with c = 0 without a correction; NaN when the window holds
    fewer points than parameters.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.abs(np.asarray(y, dtype=np.float64))
    sel = (x >= window[0]) & (x <= window[1]) & (x > 0) & (y > 0) & np.isfinite(y)
    columns = [np.ones(sel.sum()), np.log(x[sel])]
    if correction is not None:
        columns.append(correction(x[sel]))
    if sel.sum() < len(columns):
        return np.nan, np.nan
    A = np.stack(columns, axis=1)
    w = np.ones(sel.sum()) if weights is None else np.sqrt(np.asarray(weights, dtype=np.float64)[sel])
    coef = np.linalg.lstsq(A * w[:, None], np.log(y[sel]) * w, rcond=None)[0]
    return float(coef[1]), float(coef[2]) if correction is not None else 0.0
