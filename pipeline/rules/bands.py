"""R1-R3: bands for total and active B12, censored results as intervals; MMA band for R5.

Severity codes order the bands so that "more severe wins" is a max: 0 unlikely,
1 indeterminate, 2 deficient. For MMA: 0 normal, 1 indeterminate (straddles), 2 raised.
"""

from __future__ import annotations

import numpy as np

UNLIKELY, INDETERMINATE, DEFICIENT = 0, 1, 2
B12_BANDS = np.array(["unlikely", "indeterminate", "deficient"], dtype=object)
MMA_BANDS = np.array(["normal", "indeterminate", "raised"], dtype=object)


def interval(value: np.ndarray, censor: np.ndarray) -> tuple[np.ndarray, ...]:
    """R3: a result as an interval (lo, lo_open, hi, hi_open); ``<150`` is [0, 150)."""
    value = np.asarray(value, dtype="float64")
    censor = np.asarray(censor)  # text or fixed-width text: both compare with "<"
    lt, le = censor == "<", censor == "<="
    gt, ge = censor == ">", censor == ">="
    lo = np.where(lt | le, 0.0, value)
    hi = np.where(gt | ge, np.inf, value)
    return lo, gt, hi, lt


def b12_band(value: np.ndarray, censor: np.ndarray, deficient_below: np.ndarray | float,
             unlikely_above: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """R1/R2 with R3: (severity code, censored_ambiguous).

    Deficient when the whole interval is below ``deficient_below``; unlikely when it is all
    above ``unlikely_above``; indeterminate when it lies within the inclusive middle band;
    otherwise indeterminate and marked ambiguous.
    """
    lo, lo_open, hi, hi_open = interval(value, censor)
    dlim, ulim = np.asarray(deficient_below, "float64"), np.asarray(unlikely_above, "float64")
    deficient = (hi < dlim) | ((hi == dlim) & hi_open)
    unlikely = (lo > ulim) | ((lo == ulim) & lo_open)
    middle = (lo >= dlim) & (hi <= ulim)
    code = np.where(deficient, DEFICIENT, np.where(unlikely, UNLIKELY, INDETERMINATE))
    ambiguous = ~(deficient | unlikely | middle)
    return code.astype("int8"), ambiguous


def mma_band(value: np.ndarray, censor: np.ndarray,
             upper: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """R5's reading of an MMA: raised (> upper), normal (<= upper), or straddling (ambiguous)."""
    lo, lo_open, hi, _ = interval(value, censor)
    upper = np.asarray(upper, "float64")
    raised = (lo > upper) | ((lo == upper) & lo_open)
    normal = hi <= upper
    code = np.where(raised, 2, np.where(normal, 0, 1))
    return code.astype("int8"), ~(raised | normal)
