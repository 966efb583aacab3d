"""The scale searches of llama.cpp's k-quants: codes and scales that fit a group of values.

Written from ggml-quants.c (make_qx_quants, make_q3_quants, make_qkx2_quants), the versions
llama-quantize runs when it has no importance matrix. Each step keeps llama.cpp's float32
arithmetic in its order (no fastmath: a reordered sum picks another scale now and then),
so that our codes are llama.cpp's. Codes go to L (int32), scales are returned.
"""

from __future__ import annotations

import numpy as np
from numba import njit

JIT = dict(cache=True, boundscheck=False, error_model="numpy")
INLINE = dict(JIT, inline="always")

f32 = np.float32
GROUP_MAX_EPS = f32(1e-15)  # a group whose largest magnitude is below this is all zeros


@njit(**INLINE)
def nearest_int(value):
    """Round to nearest, ties to even: what ggml's nearest_int (a float32 add trick) computes."""
    return np.int64(np.rint(value))


@njit(**INLINE)
def clamp(value, low, high):
    return max(low, min(high, value))


@njit(**INLINE)
def largest_magnitude(x):
    """The value of x with the largest magnitude (the first of equals), and that magnitude."""
    amax, value = f32(0.0), f32(0.0)
    for v in x:
        if abs(v) > amax:
            amax, value = abs(v), v
    return value, amax


@njit(**JIT)
def fit_symmetric(x, nmax, L):
    """make_qx_quants with rmse_type 1: x ~ scale * (L - nmax), L in 0..2*nmax-1.

    Starts from the scale that maps the largest magnitude to -nmax, then tries 18 nearby
    scales; keeps the codes whose least-squares scale (weights x^2) explains most of x.
    """
    value, amax = largest_magnitude(x)
    if amax < GROUP_MAX_EPS:
        L[:] = 0
        return f32(0.0)
    fnmax = f32(nmax)
    iscale = -fnmax / value
    sumlx, suml2 = _symmetric_sums(x, iscale, nmax)
    for i in range(x.shape[0]):
        L[i] = nmax + clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1)
    scale = sumlx / suml2 if suml2 != 0 else f32(0.0)
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = -(fnmax + f32(0.1) * f32(step)) / value
        sumlx, suml2 = _symmetric_sums(x, iscale, nmax)
        if suml2 > 0 and sumlx * sumlx > best * suml2:
            for i in range(x.shape[0]):
                L[i] = nmax + clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1)
            scale = sumlx / suml2
            best = scale * sumlx
    return scale


@njit(**INLINE)
def _symmetric_sums(x, iscale, nmax):
    """sum(w x l), sum(w l^2) for the codes l of x at iscale, weights w = x^2."""
    sumlx, suml2 = f32(0.0), f32(0.0)
    for v in x:
        l = f32(clamp(nearest_int(iscale * v), -nmax, nmax - 1))
        w = v * v
        sumlx += w * v * l
        suml2 += w * l * l
    return sumlx, suml2


@njit(**JIT)
def fit_symmetric_3bit(x, nmax, L):
    """make_qx_quants' sibling make_q3_quants (do_rmse): x ~ scale * (L - nmax).

    Rounds at the scale that maps the largest magnitude to -nmax, then moves single codes
    (up to 5 sweeps) while that raises the weighted fit (weights x^2).
    """
    value, amax = largest_magnitude(x)
    if amax < GROUP_MAX_EPS:
        L[:] = 0
        return f32(0.0)
    iscale = -f32(nmax) / value
    sumlx, suml2 = f32(0.0), f32(0.0)
    for i in range(x.shape[0]):
        l = clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1)
        L[i] = l
        w = x[i] * x[i]
        sumlx += w * x[i] * f32(l)
        suml2 += w * f32(l) * f32(l)
    for _ in range(5):
        changed = False
        for i in range(x.shape[0]):
            w = x[i] * x[i]
            slx = sumlx - w * x[i] * f32(L[i])
            if slx > 0:
                sl2 = suml2 - w * f32(L[i]) * f32(L[i])
                new_l = clamp(nearest_int(x[i] * sl2 / slx), -nmax, nmax - 1)
                if new_l != L[i]:
                    slx += w * x[i] * f32(new_l)
                    sl2 += w * f32(new_l) * f32(new_l)
                    if sl2 > 0 and slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = new_l
                        sumlx, suml2 = slx, sl2
                        changed = True
        if not changed:
            break
    for i in range(x.shape[0]):
        L[i] += nmax
    return sumlx / suml2 if suml2 > 0 else f32(0.0)


@njit(**JIT)
def fit_scale_min(x, weights, L, Laux, nmax, rmin, rdelta, nstep, use_mad):
    """make_qkx2_quants: x ~ scale * L - min with L in 0..nmax, min >= 0; returns (scale, min).

    Tries nstep + 1 scales around nmax / (max - min), solves the weighted least-squares
    scale and offset for each one's codes, keeps the one of least weighted error (squared,
    or absolute if use_mad).
    """
    n = x.shape[0]
    low, high = x[0], x[0]
    sum_w = weights[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        low = min(low, x[i])
        high = max(high, x[i])
        sum_w += weights[i]
        sum_x += weights[i] * x[i]
    if low > 0:
        low = f32(0.0)
    if high == low:
        L[:] = 0
        return f32(0.0), -low
    fnmax = f32(nmax)
    iscale = fnmax / (high - low)
    scale = f32(1.0) / iscale
    best_error = f32(0.0)
    for i in range(n):
        L[i] = clamp(nearest_int(iscale * (x[i] - low)), 0, nmax)
        best_error += weights[i] * _error(scale * f32(L[i]) + low - x[i], use_mad)
    for step in range(nstep + 1):
        iscale = (rmin + rdelta * f32(step) + fnmax) / (high - low)
        sum_l, sum_l2, sum_xl = f32(0.0), f32(0.0), f32(0.0)
        for i in range(n):
            l = clamp(nearest_int(iscale * (x[i] - low)), 0, nmax)
            Laux[i] = l
            w = weights[i]
            sum_l += w * f32(l)
            sum_l2 += w * f32(l) * f32(l)
            sum_xl += w * f32(l) * x[i]
        det = sum_w * sum_l2 - sum_l * sum_l
        if det > 0:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
            if this_min > 0:
                this_min = f32(0.0)
                this_scale = sum_xl / sum_l2
            error = f32(0.0)
            for i in range(n):
                error += weights[i] * _error(this_scale * f32(Laux[i]) + this_min - x[i], use_mad)
            if error < best_error:
                L[:] = Laux[:n]
                best_error = error
                scale, low = this_scale, this_min
    return scale, -low


@njit(**INLINE)
def _error(diff, use_mad):
    return abs(diff) if use_mad else diff * diff
