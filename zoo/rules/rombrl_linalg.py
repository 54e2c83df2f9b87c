"""Linear algebra of ROMBRL's implicit leader step (rombrl.md §1, §4.4), without any p×p matrix.

- :class:`WoodburyInverse`: A⁻¹ for the Fisher-type A = c·I − XᵀY + ZᵀZ + UᵀV (§4.4 steps 6–7) by the three
  nested Woodbury updates. Only k×k systems (k = m or m·h) are factorised, in float64 (``torch.linalg.lu_factor``
  + ``lu_solve``, never an explicit inverse); the p-sized factors are kept in the rows' own dtype.
- :func:`kkt_direction`: the active-constraint (KKT/Schur) direction of Eq. (9) on top of any A⁻¹.
- :func:`conjugate_gradient`, :func:`gmres` and :class:`ExactOperator`: the ``exact`` Hessian option,
  A = c·I + H (+ UᵀV), with H applied by Hessian-vector products and A⁻¹ by conjugate gradient (GMRES, or CG on the
  normal equations, when the cross term makes A non-symmetric).
- :func:`implicit_total_derivative`: the implicit-function-theorem total derivative of a leader objective at the
  follower's optimum for any differentiable (f, F) on flat parameter vectors — the reference the exact option is
  checked against (finite differences in the tests).

Conventions: a "vector" is a [p] tensor; several vectors are stacked as rows, [k, p]. X, Y, U, V are [m, p],
Z is [m·h, p], exactly the row matrices of rombrl.md §4.4.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

SMALL_DTYPE = torch.float64  # dtype of the m×m and m·h×m·h solves (rombrl.md §4.4 step 7 [REC])


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate tensors (e.g. one gradient per parameter) into one flat [p] vector, in list order."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vector: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Split a flat [p] vector into views shaped like ``like`` (the inverse of :func:`flatten`)."""
    out, offset = [], 0
    for t in like:
        n = t.numel()
        out.append(vector[offset : offset + n].view_as(t))
        offset += n
    if offset != vector.numel():
        raise ValueError(f"vector has {vector.numel()} entries, the tensors hold {offset}")
    return out


class _SmallSolve:
    """LU factorisation of a small k×k system in float64; ``solve(rhs [k, n])`` returns float64 [k, n]."""

    def __init__(self, matrix: torch.Tensor) -> None:
        self.lu, self.pivots, self.info = torch.linalg.lu_factor_ex(matrix.to(SMALL_DTYPE))
        self.k = matrix.shape[0]

    @property
    def singular(self) -> bool:
        return bool(self.info.item() != 0)

    def solve(self, rhs: torch.Tensor, adjoint: bool = False) -> torch.Tensor:
        if self.k == 0:
            return rhs.to(SMALL_DTYPE)
        return torch.linalg.lu_solve(self.lu, self.pivots, rhs.to(SMALL_DTYPE), adjoint=adjoint)


class WoodburyInverse:
    """A⁻¹ for A = c·I − XᵀY + ZᵀZ + UᵀV by three nested Woodbury updates (rombrl.md §4.4 step 7).

        M3 = cI − XᵀY :  M3⁻¹P = (1/c)[P + Xᵀ(cI_m − YXᵀ)⁻¹(YP)]
        M2 = M3 + ZᵀZ :  M2⁻¹P = M3⁻¹P − (M3⁻¹Zᵀ)(I + ZM3⁻¹Zᵀ)⁻¹(ZM3⁻¹P)
        A  = M2 + UᵀV :  A⁻¹P  = M2⁻¹P − (M2⁻¹Uᵀ)(I + VM2⁻¹Uᵀ)⁻¹(VM2⁻¹P)

    The caches K3 = Xᵀ(cI − YXᵀ)⁻¹, K2 = M3⁻¹Zᵀ(I + ZM3⁻¹Zᵀ)⁻¹ and KA = M2⁻¹Uᵀ(I + VM2⁻¹Uᵀ)⁻¹ are held in factored
    form, (p-sized rows Xᵀ, M3⁻¹Zᵀ, M2⁻¹Uᵀ) × (float64 LU of the small system), built once per implicit step; one
    application then costs O(p·(m + m·h)) plus three small float64 solves. The properties ``K3``, ``K2`` and ``KA``
    materialise the p×k matrices (for checks).

    ``transpose=True`` gives A⁻ᵀ instead (Aᵀ = cI − YᵀX + ZᵀZ + VᵀU: X↔Y, U↔V), the ``hessian_transpose`` switch of
    rombrl.md §8 #8. The damping must be positive (§8 #7: c = 0 divides by zero).
    """

    def __init__(
        self,
        damping: float,
        X: torch.Tensor,
        Y: torch.Tensor,
        Z: torch.Tensor,
        U: torch.Tensor,
        V: torch.Tensor,
        transpose: bool = False,
    ) -> None:
        if not damping > 0.0:
            raise ValueError(f"rule.damping must be > 0 for the Woodbury chain (rombrl.md §8 #7), got {damping}")
        if transpose:
            X, Y, U, V = Y, X, V, U
        p = X.shape[1]
        for name, rows in (("X", X), ("Y", Y), ("Z", Z), ("U", U), ("V", V)):
            if rows.dim() != 2 or rows.shape[1] != p:
                raise ValueError(f"{name} must be [k, {p}], got {tuple(rows.shape)}")
        self.c = float(damping)
        self.X, self.Y, self.Z, self.U, self.V = X, Y, Z, U, V
        eye = lambda k: torch.eye(k, dtype=SMALL_DTYPE, device=X.device)  # noqa: E731
        # M3: the m×m system cI − YXᵀ
        self._g3 = _SmallSolve(self.c * eye(X.shape[0]) - (Y @ X.T).to(SMALL_DTYPE))
        # M2: Q2 = M3⁻¹Zᵀ (as rows [m·h, p]) and the m·h×m·h system I + ZM3⁻¹Zᵀ
        self.Q2 = self._m3_inv(Z)
        self._g2 = _SmallSolve(eye(Z.shape[0]) + (Z @ self.Q2.T).to(SMALL_DTYPE))
        # A: QA = M2⁻¹Uᵀ (as rows [m, p]) and the m×m system I + VM2⁻¹Uᵀ
        self.QA = self._m2_inv(U)
        self._ga = _SmallSolve(eye(U.shape[0]) + (V @ self.QA.T).to(SMALL_DTYPE))

    @property
    def singular(self) -> bool:
        """True when one of the three small systems is exactly singular (the result is then not finite)."""
        return self._g3.singular or self._g2.singular or self._ga.singular

    # -- the chain, on row-stacked vectors R [k, p] ------------------------------------------------
    def _m3_inv(self, R: torch.Tensor) -> torch.Tensor:
        s = self._g3.solve(self.Y @ R.T)  # (cI − YXᵀ)⁻¹ (Y P), [m, k]
        return torch.addmm(R, s.T.to(R.dtype), self.X).div_(self.c)

    def _m2_inv(self, R: torch.Tensor) -> torch.Tensor:
        P = self._m3_inv(R)
        s = self._g2.solve(self.Z @ P.T)  # [m·h, k]
        return P.addmm_(s.T.to(R.dtype), self.Q2, alpha=-1.0)

    def apply(self, P: torch.Tensor) -> torch.Tensor:
        """A⁻¹P for a vector [p] or row-stacked vectors [k, p] (each row is one right-hand side)."""
        R = P.unsqueeze(0) if P.dim() == 1 else P
        M = self._m2_inv(R)
        s = self._ga.solve(self.V @ M.T)  # [m, k]
        out = M.addmm_(s.T.to(R.dtype), self.QA, alpha=-1.0)
        return out[0] if P.dim() == 1 else out

    __call__ = apply

    # -- the caches, materialised (p×k) --------------------------------------------------------------
    @property
    def K3(self) -> torch.Tensor:
        """Xᵀ(cI − YXᵀ)⁻¹, [p, m]."""
        return self._g3.solve(self.X, adjoint=True).T

    @property
    def K2(self) -> torch.Tensor:
        """M3⁻¹Zᵀ(I + ZM3⁻¹Zᵀ)⁻¹, [p, m·h]."""
        return self._g2.solve(self.Q2, adjoint=True).T

    @property
    def KA(self) -> torch.Tensor:
        """M2⁻¹Uᵀ(I + VM2⁻¹Uᵀ)⁻¹, [p, m]."""
        return self._ga.solve(self.QA, adjoint=True).T


@dataclass
class KKTResult:
    direction: torch.Tensor  # ĥ [p]
    schur: float  # S = C − λ·BᵀA⁻¹B
    skipped: bool  # |S| < guard: the Schur term was left out (ĥ = A⁻¹∇_φJ)


def kkt_direction(
    solve: Callable[[torch.Tensor], torch.Tensor],
    grad_phi: torch.Tensor,
    constraint_grad: torch.Tensor,
    constraint: float,
    lam: float,
    guard: float = 1e-8,
) -> KKTResult:
    """Eq. (9): ĥ = A⁻¹∇_φJ + λ·(A⁻¹B)(BᵀA⁻¹∇_φJ)/S with S = C − λ·BᵀA⁻¹B (rombrl.md §4.4 step 8).

    This is the top-left block of K⁻¹ for K = [[A, B], [λBᵀ, C]] applied to ∇_φJ. ``solve`` applies A⁻¹ to row-
    stacked vectors. When |S| < ``guard`` the Schur term is skipped and ĥ = A⁻¹∇_φJ (the [REC] guard).
    """
    both = solve(torch.stack([constraint_grad, grad_phi]))
    a_inv_b, a_inv_g = both[0], both[1]
    schur = float(constraint) - lam * float(torch.dot(constraint_grad.to(SMALL_DTYPE), a_inv_b.to(SMALL_DTYPE)))
    if not abs(schur) >= guard:  # also catches a non-finite S
        return KKTResult(a_inv_g, schur, True)
    coef = lam * float(torch.dot(constraint_grad.to(SMALL_DTYPE), a_inv_g.to(SMALL_DTYPE))) / schur
    return KKTResult(a_inv_g + coef * a_inv_b, schur, False)


@dataclass
class CGInfo:
    iterations: torch.Tensor | int  # products with A the solve used (a 0-d tensor on the solve's device)
    residual: torch.Tensor | float  # final ‖b − Mx‖ / ‖b‖


def default_check_every(device: torch.device) -> int:
    """Iterations between the solvers' host reads of "all converged?": every one on the CPU (reads are free
    there), every 16th on a GPU (a read waits for the device)."""
    return 16 if device.type == "cuda" else 1


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    tol: float = 1e-10,
    max_iter: int = 100,
    check_every: int | None = None,
) -> tuple[torch.Tensor, CGInfo]:
    """Solve M x = b for a symmetric positive-definite M given only ``matvec`` (Hestenes–Stiefel CG, x₀ = 0).

    Stops when ‖r‖ ≤ tol·‖b‖, when pᵀMp ≤ 0 (M not positive definite along p: x stays where it is), or after
    ``max_iter`` iterations. The stopping tests are on-device masks (a stopped iterate takes zero steps), so the
    result is that of stopping at once; the host reads "all stopped?" only every ``check_every`` iterations to
    skip the remaining products (:func:`default_check_every`; ``max_iter`` or more: never).
    """
    check_every = check_every or default_check_every(b.device)
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = torch.dot(r, r)
    b_norm = rs.sqrt()
    threshold = tol * b_norm
    active = b_norm > 0
    used = torch.zeros((), dtype=torch.long, device=b.device)
    for it in range(1, max_iter + 1):
        mp = matvec(p)
        curvature = torch.dot(p, mp)
        active = active & (curvature > 0)
        alpha = torch.where(active, rs / torch.where(active, curvature, torch.ones_like(curvature)), 0.0)
        x = x + alpha * p
        r = torch.where(active, r - alpha * mp, r)
        rs_new = torch.dot(r, r)
        used = used + active.long()
        going = active & (rs_new.sqrt() > threshold)
        beta = torch.where(going, rs_new / torch.where(going, rs, torch.ones_like(rs)), 0.0)
        p = torch.where(going, r + beta * p, p)
        rs = torch.where(active, rs_new, rs)
        active = going
        if it % check_every == 0 and it < max_iter and not bool(active):
            break
    residual = rs.sqrt() / torch.where(b_norm > 0, b_norm, torch.ones_like(b_norm))
    return x, CGInfo(used, residual)


def gmres(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    tol: float = 1e-10,
    max_iter: int = 100,
    restart: int = 100,
    check_every: int | None = None,
) -> tuple[torch.Tensor, CGInfo]:
    """Solve A x = b for a general non-singular A given only ``matvec``: restarted GMRES(``restart``), x₀ = 0.

    Arnoldi with modified Gram–Schmidt; the small least-squares problem is kept in QR form by Givens rotations
    (accumulated as one orthogonal matrix Qᵀ, so ``g = β·Qᵀe₁``), in float64 on the device. A cycle stops when
    the residual estimate |g_{j+1}| ≤ tol·‖b‖, on a breakdown (‖w‖ ≤ 1e-300), or after ``max_iter`` products in
    all. The stopping tests are on-device masks: a stopped cycle's later columns are identity columns with
    g = 0, so they add nothing to x, and the result is that of stopping at once. The host reads "stopped?" every
    ``check_every`` products (:func:`default_check_every`) to skip the rest. The reported residual is the true
    ‖b − Ax‖/‖b‖ (one extra product).
    """
    check_every = check_every or default_check_every(b.device)
    small = {"dtype": SMALL_DTYPE, "device": b.device}
    x = torch.zeros_like(b)
    b_norm = b.norm()
    threshold = tol * b_norm.to(SMALL_DTYPE)
    done = ~(b_norm > 0)
    used = torch.zeros((), dtype=torch.long, device=b.device)
    total = 0
    while total < max_iter:
        steps = min(restart, max_iter - total)
        r = b - matvec(x) if total else b.clone()
        beta = r.norm()
        active = ~done & (beta.to(SMALL_DTYPE) > threshold)
        basis = [torch.where(active, r / torch.where(active, beta, torch.ones_like(beta)), 0.0)]
        q_t = torch.eye(steps + 1, **small)  # the product of the Givens rotations so far
        R = torch.eye(steps, **small)
        g_used = torch.zeros(steps, **small)
        estimate = beta.to(SMALL_DTYPE)  # |g_k|: the residual estimate after the last active column
        columns = 0
        for j in range(steps):
            w = matvec(basis[j])
            total += 1
            columns += 1
            h = []
            for q in basis:
                hij = torch.dot(q, w)
                w = w - hij * q
                h.append(hij)
            h_next = w.norm()
            col = torch.stack(h).to(SMALL_DTYPE)
            col = q_t[: j + 1, : j + 1] @ col  # the previous rotations
            denom = torch.hypot(col[j], h_next.to(SMALL_DTYPE))
            nonzero = active & (denom > 0)
            safe = torch.where(nonzero, denom, torch.ones_like(denom))
            c = torch.where(nonzero, col[j] / safe, 1.0)
            s = torch.where(nonzero, h_next.to(SMALL_DTYPE) / safe, 0.0)
            col = torch.cat([col[:j], torch.where(active, denom, 1.0).unsqueeze(0)])
            R[: j + 1, j] = torch.where(active, col, R[: j + 1, j])
            row_j, row_next = q_t[j].clone(), q_t[j + 1].clone()
            q_t[j], q_t[j + 1] = c * row_j + s * row_next, -s * row_j + c * row_next
            g = beta.to(SMALL_DTYPE) * q_t[:, 0]
            g_used[j] = torch.where(active, g[j], 0.0)
            estimate = torch.where(active, g[j + 1].abs(), estimate)
            used = used + active.long()
            active = active & (g[j + 1].abs() > threshold) & (h_next > 1e-300)
            if j + 1 < steps:
                basis.append(torch.where(active, w / torch.where(active, h_next, torch.ones_like(h_next)), 0.0))
            if (j + 1) % check_every == 0 and j + 1 < steps and not bool(active):
                break
        k = columns
        y = torch.linalg.solve_triangular(R[:k, :k], g_used[:k].unsqueeze(1), upper=True)[:, 0]
        x = x + (y.to(b.dtype) @ torch.stack(basis[:k]))
        done = done | (estimate <= threshold)
        if total < max_iter and not bool(done):  # one read per restart cycle
            continue
        break
    residual = (b - matvec(x)).norm() / torch.where(b_norm > 0, b_norm, torch.ones_like(b_norm))
    return x, CGInfo(used, residual)


class ExactOperator:
    """A = c·I + H + UᵀV with H symmetric and applied by Hessian-vector products; A⁻¹ by conjugate gradient.

    The ``exact`` Hessian option of the implicit step (rombrl.md §4.4, in place of steps 6–7): ``hvp(v)`` returns
    H·v for a flat [p] vector. Without the low-rank cross term (U, V None) A is symmetric and conjugate gradient runs
    on A itself (it must be positive definite). With it, A is not symmetric: ``solver="gmres"`` (default) runs
    restarted GMRES on A; ``solver="cgnr"`` runs CG on the normal equations AᵀA x = Aᵀb, which squares the condition
    number (on a 344-parameter test model, cond(A) ≈ 1e5, CGNR had not converged after 3000 products where GMRES
    converges within p). ``transpose=True`` applies A⁻ᵀ instead.
    """

    def __init__(
        self,
        hvp: Callable[[torch.Tensor], torch.Tensor],
        damping: float = 0.0,
        U: torch.Tensor | None = None,
        V: torch.Tensor | None = None,
        transpose: bool = False,
        tol: float = 1e-10,
        max_iter: int = 100,
        solver: str = "gmres",
    ) -> None:
        if solver not in ("gmres", "cgnr"):
            raise ValueError(f"solver must be 'gmres' or 'cgnr', got {solver!r}")
        self.solver = solver
        if damping < 0.0:
            raise ValueError(f"damping must be >= 0, got {damping}")
        if (U is None) != (V is None):
            raise ValueError("give both U and V (the cross term UᵀV) or neither")
        self.hvp, self.c = hvp, float(damping)
        self.U, self.V = (V, U) if transpose else (U, V)
        self.tol, self.max_iter = tol, max_iter
        self.last_info: CGInfo | None = None

    @property
    def symmetric(self) -> bool:
        return self.U is None

    def matvec(self, v: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """A·v (or Aᵀ·v)."""
        out = self.c * v + self.hvp(v)
        if self.U is not None and self.V is not None:
            out = out + (self.V.T @ (self.U @ v) if transpose else self.U.T @ (self.V @ v))
        return out

    def solve_one(self, b: torch.Tensor) -> torch.Tensor:
        if self.symmetric:
            x, info = conjugate_gradient(self.matvec, b, self.tol, self.max_iter)
        elif self.solver == "gmres":
            x, info = gmres(self.matvec, b, self.tol, self.max_iter, restart=min(self.max_iter, b.numel()))
        else:
            x, info = conjugate_gradient(
                lambda v: self.matvec(self.matvec(v), transpose=True),
                self.matvec(b, transpose=True),
                self.tol,
                self.max_iter,
            )
        self.last_info = info
        return x

    def apply(self, P: torch.Tensor) -> torch.Tensor:
        """A⁻¹P for a vector [p] or row-stacked vectors [k, p]."""
        if P.dim() == 1:
            return self.solve_one(P)
        return torch.stack([self.solve_one(row) for row in P])

    __call__ = apply


def implicit_total_derivative(
    leader: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    follower: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    theta: torch.Tensor,
    phi: torch.Tensor,
    kappa: float = 1.0,
    damping: float = 0.0,
    tol: float = 1e-12,
    max_iter: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Δ_θ, ĥ) with Δ_θ = ∇_θf − κ·∇²_θφF·ĥ and ĥ = (∇²_φφF + cI)⁻¹∇_φf, at (θ, φ) (rombrl.md §1).

    ``leader`` f(θ, φ) is the leader's objective, ``follower`` F(θ, φ) the objective the follower minimises
    (ROMBRL: F = J + λC). At a follower optimum φ*(θ) and with κ = 1, c = 0 this is the exact total derivative
    d f(θ, φ*(θ))/dθ by the implicit function theorem; H is applied by forward-over-reverse Hessian-vector
    products and inverted by conjugate gradient (the ``exact`` option; ∇²_φφF must be positive definite).
    """
    from torch.func import grad, jvp

    g_theta, g_phi = grad(leader, argnums=(0, 1))(theta, phi)

    def grad_phi_follower(th: torch.Tensor, ph: torch.Tensor) -> torch.Tensor:
        return grad(follower, argnums=1)(th, ph)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        return jvp(lambda ph: grad_phi_follower(theta, ph), (phi,), (v,))[1]

    op = ExactOperator(hvp, damping, tol=tol, max_iter=max_iter or 10 * phi.numel())
    h = op.apply(g_phi)
    mixed = grad(lambda th: torch.dot(grad_phi_follower(th, phi), h))(theta)
    return g_theta - kappa * mixed, h
