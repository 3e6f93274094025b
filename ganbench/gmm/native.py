"""The first-order, alternating and unrolled dynamics as one C loop per block of runs (CPU), built once with the
system C compiler (about a second) and called through ctypes.

Why: a fresh machine paid 3-5 minutes of torch.compile before the first heatmap (the unrolled step is a graph of
thousands of nodes). The dynamics are a few dozen scalar formulas per run, so a plain C loop that gcc vectorises
over runs (``#pragma omp simd``, glibc's vector ``exp``) compiles in about a second and ran faster than the fused
kernel (unrolled, 52,920 runs x 3000 steps: 5-13 s against 82 s warm-compiled, load 2.5-4, PyTorch 2.14.1). It also keeps each block of runs in cache for all iterations and drops runs that reached an exact fixed
point (both intervals collapsed: no gradient, nothing moves; the step is deterministic, so such a run never moves
again): about half of the first-order runs by step 500.

The formulas are those of ``model`` and ``dynamics``, equal to round-off (-ffast-math may reassociate sums); the
tests compare every method with the tensor version after 120 steps (1e-10 in float64). The tensor version stays the reference and the path
for CUDA, the autograd unrolled gradients and ``optimal``.

  F(x)  = ½[φ(x−μ*₁) + φ(x−μ*₂)] − ½[φ(x−μ₁) + φ(x−μ₂)],   F'(x) = ½Σⱼ[(x−μⱼ)φ(x−μⱼ) − (x−μ*ⱼ)φ(x−μ*ⱼ)]
  ∂L/∂μⱼ = ½Σᵢ[φ(rᵢ−μⱼ) − φ(ℓᵢ−μⱼ)]
  discriminator step  e ← e + η sₑ aₑ F(e),  tangent ∂e/∂μⱼ ← t + η sₑ aₑ (F'(e) t − ½(e−μⱼ)φ(e−μⱼ))
  unrolled generator gradient  ∂L/∂μ(μ, D_K) + Σₑ sₑ F(e_K) ∂e_K/∂μ
"""
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..errors import GanbenchError
from .dynamics import State

log = logging.getLogger("ganbench.gmm")

METHOD_CODES = {"first_order": 0, "alternating": 1, "unrolled": 2}
BLOCK = 1024         # runs per block (a multiple of 64, see `lanes`): 1024 x 8 state values x 8 B = 64 KiB, in cache
COMPACT_EVERY = 32   # steps between removals of runs at an exact fixed point

# One body, instantiated for float and double. Every step is branch-free over the runs of a block (selects,
# not branches), so that gcc vectorises the inner loop; exp goes to glibc's libmvec under -ffast-math.
_BODY = r"""
/* Scalars only (no local arrays) inside the loops over runs: gcc keeps them in vector registers. */
static inline AI REAL PHI_(REAL x) { return EXP_((REAL)-0.5 * x * x) * (REAL)0.3989422804014327; }

/* F(x), F'(x), phi(x - mu1), phi(x - mu2) at one point of one run. */
static inline AI void FDF_(REAL x, REAL m1, REAL m2, REAL t1, REAL t2, REAL *f, REAL *df, REAL *p1, REAL *p2) {
    REAL dt1 = x - t1, dt2 = x - t2, dg1 = x - m1, dg2 = x - m2;
    REAL q1 = PHI_(dt1), q2 = PHI_(dt2), g1 = PHI_(dg1), g2 = PHI_(dg2);
    *f = (REAL)0.5 * (q1 + q2) - (REAL)0.5 * (g1 + g2);
    *df = (REAL)0.5 * ((dg1 * g1 - dt1 * q1) + (dg2 * g2 - dt2 * q2));
    *p1 = g1; *p2 = g2;
}

/* dL/dmu_j = 1/2 sum_i [phi(r_i - mu_j) - phi(l_i - mu_j)] */
#define GRADMU_(e0, e1, e2, e3, g1, g2) do { \
    g1 = (REAL)0.5 * (PHI_(e1 - m1) - PHI_(e0 - m1) + PHI_(e3 - m1) - PHI_(e2 - m1)); \
    g2 = (REAL)0.5 * (PHI_(e1 - m2) - PHI_(e0 - m2) + PHI_(e3 - m2) - PHI_(e2 - m2)); } while (0)

/* One endpoint's gradient step e <- e + lr s a F(e); with tangents (ta, tb) = de/d(mu1, mu2). */
#define EUPD_(e, sign, al) do { REAL f_, df_, p1_, p2_; FDF_(e, m1, m2, t1, t2, &f_, &df_, &p1_, &p2_); \
    e = e + lr * (REAL)(sign) * (al) * f_; } while (0)
#define EUPDT_(e, ta, tb, sign, al) do { REAL f_, df_, p1_, p2_; FDF_(e, m1, m2, t1, t2, &f_, &df_, &p1_, &p2_); \
    REAL rate_ = lr * (REAL)(sign) * (al); \
    ta = ta + rate_ * (df_ * ta - (REAL)0.5 * (e - m1) * p1_); \
    tb = tb + rate_ * (df_ * tb - (REAL)0.5 * (e - m2) * p2_); \
    e = e + rate_ * f_; } while (0)

/* 1 or 0: conditions are combined by arithmetic on 0/1 values (alive is 0/1 too), which gcc vectorises
   where && and & of comparisons would mix mask widths. */
#define IND_(c) ((c) ? (REAL)1 : (REAL)0)

/* keep_ordered (dynamics.py): crossing live intervals meet at the midpoint; a live interval of width <= 0
   collapses to its midpoint for good; a collapsed one slides with its neighbour. TSEL_ also moves the tangents. */
#define NSEL_(c, d, s) (void)0
#define TSEL_(c, d, s) do { d##0 = (c) ? s##0 : d##0; d##1 = (c) ? s##1 : d##1; } while (0)
#define ORDER_(SEL) do { \
    REAL cr_ = a1 * a2 * IND_(e1 > e2); REAL mid_ = (REAL)0.5 * (e1 + e2); \
    REAL tm_0 = (REAL)0.5 * (u10 + u20), tm_1 = (REAL)0.5 * (u11 + u21); \
    e1 = cr_ != 0 ? mid_ : e1; e2 = cr_ != 0 ? mid_ : e2; SEL(cr_ != 0, u1, tm_); SEL(cr_ != 0, u2, tm_); \
    REAL c1_ = a1 * IND_(e1 <= e0); REAL p1_ = (REAL)0.5 * (e0 + e1); \
    REAL tp_0 = (REAL)0.5 * (u00 + u10), tp_1 = (REAL)0.5 * (u01 + u11); \
    e0 = c1_ != 0 ? p1_ : e0; e1 = c1_ != 0 ? p1_ : e1; SEL(c1_ != 0, u0, tp_); SEL(c1_ != 0, u1, tp_); a1 = c1_ != 0 ? (REAL)0 : a1; \
    REAL c2_ = a2 * IND_(e3 <= e2); REAL p2_ = (REAL)0.5 * (e2 + e3); \
    REAL tq_0 = (REAL)0.5 * (u20 + u30), tq_1 = (REAL)0.5 * (u21 + u31); \
    e2 = c2_ != 0 ? p2_ : e2; e3 = c2_ != 0 ? p2_ : e3; SEL(c2_ != 0, u2, tq_); SEL(c2_ != 0, u3, tq_); a2 = c2_ != 0 ? (REAL)0 : a2; \
    REAL s1_ = ((REAL)1 - a1) * IND_(e1 > e2); e0 = s1_ != 0 ? e2 : e0; e1 = s1_ != 0 ? e2 : e1; SEL(s1_ != 0, u0, u2); SEL(s1_ != 0, u1, u2); \
    REAL s2_ = ((REAL)1 - a2) * IND_(e2 < e1); e2 = s2_ != 0 ? e1 : e2; e3 = s2_ != 0 ? e1 : e3; SEL(s2_ != 0, u2, u1); SEL(s2_ != 0, u3, u1); \
    (void)tm_0; (void)tm_1; (void)tp_0; (void)tp_1; (void)tq_0; (void)tq_1; } while (0)

/* The discriminator's step from (e0..e3, a1, a2) in place, without / with tangents u<endpoint><j>. */
#define DSTEP_() do { EUPD_(e0, -1, a1); EUPD_(e1, 1, a1); EUPD_(e2, -1, a2); EUPD_(e3, 1, a2); \
    ORDER_(NSEL_); } while (0)
#define DSTEPT_() do { EUPDT_(e0, u00, u01, -1, a1); EUPDT_(e1, u10, u11, 1, a1); \
    EUPDT_(e2, u20, u21, -1, a2); EUPDT_(e3, u30, u31, 1, a2); ORDER_(TSEL_); } while (0)

#define LOAD_(i) REAL m1 = s[0][i], m2 = s[1][i]; \
    REAL e0 = s[2][i], e1 = s[3][i], e2 = s[4][i], e3 = s[5][i], a1 = s[6][i], a2 = s[7][i]; \
    REAL u00 = 0, u01 = 0, u10 = 0, u11 = 0, u20 = 0, u21 = 0, u30 = 0, u31 = 0; \
    (void)u00; (void)u01; (void)u10; (void)u11; (void)u20; (void)u21; (void)u30; (void)u31;
/* The new state (mu - lr g, e0..e3, a1, a2) into row i; moved = any value changed. */
#define STORE_(i, g1, g2) do { REAL n1 = m1 - lr * (g1), n2 = m2 - lr * (g2); \
    moved[i] = IND_(n1 != m1) + IND_(n2 != m2) + IND_(e0 != s[2][i]) + IND_(e1 != s[3][i]) \
               + IND_(e2 != s[4][i]) + IND_(e3 != s[5][i]) + IND_(a1 != s[6][i]) + IND_(a2 != s[7][i]); \
    prev[0][i] = m1; prev[1][i] = m2; s[0][i] = n1; s[1][i] = n2; \
    s[2][i] = e0; s[3][i] = e1; s[4][i] = e2; s[5][i] = e3; s[6][i] = a1; s[7][i] = a2; } while (0)

/* Runs [0, n) of SoA state x[8][stride] (mu1, mu2, l1, r1, l2, r2, alive1, alive2) advance `iters` steps.
   dir[2][stride] receives (mu_{T-1} - mu_T) / lr. Runs at an exact fixed point are set aside every
   `compact` steps (their direction is 0: the last step did not move them). Each phase of a step is its own
   straight-line loop over the runs of the block, the form gcc vectorises. */
void RUN_(int method, long n, long stride, int iters, int unroll, REAL lr, REAL t1, REAL t2, REAL *x, REAL *dir,
          int compact) {
    /* Per-call scratch (about 250 KiB in double: too large for a thread's stack to be safe). */
    struct { REAL s[8][BLOCKSZ], prev[2][BLOCKSZ], u[14][BLOCKSZ], d[6][BLOCKSZ], moved[BLOCKSZ];
             long idx[BLOCKSZ]; } *w = calloc(1, sizeof *w);
    if (!w) return;
    REAL (*s)[BLOCKSZ] = w->s, (*prev)[BLOCKSZ] = w->prev, (*u)[BLOCKSZ] = w->u, (*d)[BLOCKSZ] = w->d;
    long *idx = w->idx;
    REAL *moved = w->moved;
    for (long start = 0; start < n; start += BLOCKSZ) {
        long cnt = n - start < BLOCKSZ ? n - start : BLOCKSZ;
        for (long i = 0; i < cnt; i++) {
            idx[i] = start + i;
            for (int k = 0; k < 8; k++) s[k][i] = x[k * stride + start + i];
            prev[0][i] = s[0][i]; prev[1][i] = s[1][i];
        }
        long live = cnt;
        for (int it = 0; it < iters && live > 0; it++) {
            /* Whole vectors only: a run computed in a loop's scalar remainder would get libm's exp instead of
               the vector one (last-bit differences), so results would depend on where compaction put it. The
               extra lanes compute on stale or zero slots and are never read back. */
            long lanes = (live + 63) & ~63L;
            if (method == 0) {            /* first order: both players step from the same point */
                #pragma omp simd
                for (long i = 0; i < lanes; i++) {
                    LOAD_(i)
                    REAL g1, g2;
                    GRADMU_(e0, e1, e2, e3, g1, g2);
                    DSTEP_();
                    STORE_(i, g1, g2);
                }
            } else if (method == 1) {     /* alternating: the generator sees the new discriminator */
                #pragma omp simd
                for (long i = 0; i < lanes; i++) {
                    LOAD_(i)
                    REAL g1, g2;
                    DSTEP_();
                    GRADMU_(e0, e1, e2, e3, g1, g2);
                    STORE_(i, g1, g2);
                }
            } else {                      /* unrolled: K tangent steps, kept in u[] between the phases */
                for (int j = 0; j < unroll; j++) {
                    #pragma omp simd
                    for (long i = 0; i < lanes; i++) {
                        REAL m1 = s[0][i], m2 = s[1][i];
                        int first = j == 0;
                        REAL e0 = first ? s[2][i] : u[0][i], e1 = first ? s[3][i] : u[1][i];
                        REAL e2 = first ? s[4][i] : u[2][i], e3 = first ? s[5][i] : u[3][i];
                        REAL a1 = first ? s[6][i] : u[4][i], a2 = first ? s[7][i] : u[5][i];
                        REAL u00 = first ? 0 : u[6][i], u01 = first ? 0 : u[7][i];
                        REAL u10 = first ? 0 : u[8][i], u11 = first ? 0 : u[9][i];
                        REAL u20 = first ? 0 : u[10][i], u21 = first ? 0 : u[11][i];
                        REAL u30 = first ? 0 : u[12][i], u31 = first ? 0 : u[13][i];
                        DSTEPT_();
                        u[0][i] = e0; u[1][i] = e1; u[2][i] = e2; u[3][i] = e3; u[4][i] = a1; u[5][i] = a2;
                        u[6][i] = u00; u[7][i] = u01; u[8][i] = u10; u[9][i] = u11;
                        u[10][i] = u20; u[11][i] = u21; u[12][i] = u30; u[13][i] = u31;
                    }
                    if (j == 0)   /* the discriminator's own step is the first unrolled step (same inputs) */
                        for (int k = 0; k < 6; k++) memcpy(d[k], u[k], lanes * sizeof(REAL));
                }
                #pragma omp simd
                for (long i = 0; i < lanes; i++) {
                    REAL m1 = s[0][i], m2 = s[1][i];
                    REAL g1, g2, f, df, p1, p2;
                    /* d/dmu L(mu, D_K) = dL/dmu at D_K + sum_e s_e F(e_K) de_K/dmu */
                    GRADMU_(u[0][i], u[1][i], u[2][i], u[3][i], g1, g2);
                    FDF_(u[0][i], m1, m2, t1, t2, &f, &df, &p1, &p2);
                    g1 = g1 + (-f) * u[6][i]; g2 = g2 + (-f) * u[7][i];
                    FDF_(u[1][i], m1, m2, t1, t2, &f, &df, &p1, &p2);
                    g1 = g1 + f * u[8][i]; g2 = g2 + f * u[9][i];
                    FDF_(u[2][i], m1, m2, t1, t2, &f, &df, &p1, &p2);
                    g1 = g1 + (-f) * u[10][i]; g2 = g2 + (-f) * u[11][i];
                    FDF_(u[3][i], m1, m2, t1, t2, &f, &df, &p1, &p2);
                    g1 = g1 + f * u[12][i]; g2 = g2 + f * u[13][i];
                    REAL e0 = d[0][i], e1 = d[1][i], e2 = d[2][i], e3 = d[3][i], a1 = d[4][i], a2 = d[5][i];
                    STORE_(i, g1, g2);
                }
            }
            if (compact && (it + 1) % compact == 0 && it + 1 < iters) {
                long keep = 0;
                for (long i = 0; i < live; i++) {
                    if (moved[i] != 0) {
                        if (keep != i) {
                            for (int k = 0; k < 8; k++) s[k][keep] = s[k][i];
                            prev[0][keep] = prev[0][i]; prev[1][keep] = prev[1][i];
                            idx[keep] = idx[i];
                        }
                        keep++;
                    } else {          /* a fixed point: final state now, and its last update was 0 */
                        for (int k = 0; k < 8; k++) x[k * stride + idx[i]] = s[k][i];
                        dir[idx[i]] = 0; dir[stride + idx[i]] = 0;
                    }
                }
                live = keep;
            }
        }
        for (long i = 0; i < live; i++) {
            for (int k = 0; k < 8; k++) x[k * stride + idx[i]] = s[k][i];
            dir[idx[i]] = (prev[0][i] - s[0][i]) / lr;
            dir[stride + idx[i]] = (prev[1][i] - s[1][i]) / lr;
        }
    }
    free(w);
}
"""


def _source() -> str:
    head = ("#include <math.h>\n#include <stdlib.h>\n#include <string.h>\n#include <xmmintrin.h>\n"
            f"#define BLOCKSZ {BLOCK}\n#define AI __attribute__((always_inline))\n")
    parts = [head]
    for real, suffix, exp in (("float", "f32", "expf"), ("double", "f64", "exp")):
        body = _BODY
        for name in ("DSTEPT_", "EUPDT_", "PHI_", "FDF_", "ORDER_", "DSTEP_", "GRADMU_", "RUN_", "LOAD_", "STORE_",
                     "NSEL_", "TSEL_", "EUPD_", "IND_"):
            body = body.replace(name, f"{name.rstrip('_')}_{suffix}")
        body = body.replace("EXP_", exp).replace("REAL", real)
        parts.append(body)
    # Subnormal φ values are ~100x slower on x86 and change nothing here: flush them in the calling thread
    # (ctypes calls run on Python threads, whose MXCSR torch.set_flush_denormal may not have set).
    parts.append(r"""
void gmm_run(int dbl, int method, long n, long stride, int iters, int unroll, double lr, double t1, double t2,
             void *x, void *dir, int compact) {
    unsigned int csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040);
    if (dbl) RUN_f64(method, n, stride, iters, unroll, lr, t1, t2, (double *)x, (double *)dir, compact);
    else RUN_f32(method, n, stride, iters, unroll, (float)lr, (float)t1, (float)t2, (float *)x, (float *)dir,
                 compact);
    _mm_setcsr(csr);
}
""")
    return "".join(parts)


FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp-simd", "-fPIC", "-shared"]

_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_failed: Optional[str] = None


def compiler() -> Optional[str]:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), platform.processor())
    except OSError:
        return platform.machine() + platform.processor()


def cache_dir() -> Path:
    """Where the built library is kept: ``${GANBENCH_CACHE:-~/.cache/ganbench}/native``, a folder only the user
    can write (mode 0700, ``cachedir.private_dir``), keyed by a hash of compiler, flags, CPU and source."""
    from ..cachedir import private_dir

    return private_dir("native")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _build(cc: str, source: str, target: Path) -> None:
    """Compile ``source`` to ``target`` and record its sha256 in ``target.sha256`` (both atomic: concurrent runs
    never load a half-written file)."""
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / "gmm_native.c"
        src.write_text(source)
        built = Path(tmp) / target.name
        subprocess.run([cc, *FLAGS, str(src), "-o", str(built), "-lm"], check=True, capture_output=True, text=True)
        digest = Path(tmp) / "digest"
        digest.write_text(_digest(built.read_bytes()) + "\n")
        os.replace(built, target)
        os.replace(digest, target.with_name(target.name + ".sha256"))


def _verified(target: Path) -> bool:
    """True when ``target`` exists and its bytes have the sha256 recorded when it was built."""
    try:
        recorded = target.with_name(target.name + ".sha256").read_text().strip()
        return _digest(target.read_bytes()) == recorded
    except OSError:
        return False


def library() -> Optional[ctypes.CDLL]:
    """The built kernel, or None (no C compiler, or the build failed: the reason is logged once).

    The library is loaded only when its bytes match the sha256 recorded at its build; any other file under its
    name (replaced, truncated, left without a digest by an older ganbench) is rebuilt first, since loading a
    shared library runs its constructors."""
    global _lib, _failed
    with _lock:
        if _lib is not None or _failed is not None:
            return _lib
        cc = compiler()
        if cc is None:
            _failed = "no C compiler (cc, gcc or clang) on PATH"
            return None
        source = _source()
        # -march=native: a library built on another CPU (a shared home directory) must not be reused.
        key = hashlib.sha256((cc + " ".join(FLAGS) + _cpu_flags() + source).encode()).hexdigest()[:16]
        try:
            target = cache_dir() / f"gmm_native_{key}.so"
            if not _verified(target):
                if target.exists():
                    log.warning("%s does not match the sha256 recorded at its build; rebuilding it", target)
                _build(cc, source, target)
            lib = ctypes.CDLL(str(target))
        except (OSError, subprocess.CalledProcessError, GanbenchError) as ex:
            detail = getattr(ex, "stderr", "") or str(ex)
            what = "the C kernel has no safe place" if isinstance(ex, GanbenchError) else "building the C kernel failed"
            _failed = f"{what}: {detail.strip().splitlines()[0] if detail.strip() else ex}"
            log.warning("%s; using the tensor version", _failed)
            return None
        lib.gmm_run.restype = None
        lib.gmm_run.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long, ctypes.c_int, ctypes.c_int,
                                ctypes.c_double, ctypes.c_double, ctypes.c_double, ctypes.c_void_p, ctypes.c_void_p,
                                ctypes.c_int]
        _lib = lib
        return _lib


def unavailable_reason() -> str:
    return _failed or "the C kernel is unavailable"


def supported(method: str, device: torch.device, dtype: torch.dtype, unroll_grad: str, target: Tensor) -> bool:
    """The C loop covers first_order, alternating and analytic unrolled, on CPU, float32/float64, one μ*."""
    return (method in METHOD_CODES and device.type == "cpu" and dtype in (torch.float32, torch.float64)
            and (method != "unrolled" or unroll_grad == "analytic") and target.numel() == 2)


def simulate(method: str, state: State, target: Tensor, lr: float, iterations: int, unroll: int = 5,
             threads: int = 1, compact: int = COMPACT_EVERY) -> Tuple[State, Tensor]:
    """``simulate.simulate`` in C: the final state and the last update direction (μ_{T−1} − μ_T)/η.

    ``threads`` Python threads each run a contiguous share of the runs (ctypes releases the GIL). ``compact``:
    steps between removals of fixed-point runs (0 = never; the results are the same either way).
    """
    lib = library()
    if lib is None:
        raise RuntimeError(_failed or "the C kernel is unavailable")
    dtype = state.mu.dtype
    runs = state.mu.shape[1]
    x = torch.cat([state.mu, state.ends, state.alive.to(dtype)]).contiguous()   # (8, runs) SoA
    direction = torch.zeros(2, runs, dtype=dtype)
    t1, t2 = (float(v) for v in target.reshape(-1).tolist())
    dbl = int(dtype == torch.float64)
    code = METHOD_CODES[method]

    def part(lo: int, hi: int) -> None:
        if hi > lo:
            lib.gmm_run(dbl, code, hi - lo, runs, iterations, unroll, lr, t1, t2,
                        x.data_ptr() + lo * x.element_size(), direction.data_ptr() + lo * direction.element_size(),
                        compact)

    threads = max(1, min(threads, (runs + BLOCK - 1) // BLOCK))
    if threads == 1:
        part(0, runs)
    else:
        # Contiguous shares keep the C side simple; interleaved blocks would balance better where one half holds
        # more runs that stop early at a fixed point (not measured here).
        bounds = [runs * k // threads for k in range(threads + 1)]
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda k: part(bounds[k], bounds[k + 1]), range(threads)))
    return State(x[0:2].clone(), x[2:6].clone(), x[6:8] != 0), direction
