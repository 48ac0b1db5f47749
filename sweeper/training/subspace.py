"""Subspace training: θ = θ0 + P θ_d (DID), or θ_t = θ0_t + λ_g (P θ_{d−T})_t per group g (SAID).

The wrapped module keeps its own parameters as the frozen θ0; the forward builds the effective
weights and runs the module through `torch.func.functional_call`, so any `nn.Module` works (MLP,
CNN, HF transformer) without hooks that rebuild weights by hand.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call

from sweeper.projection import make_projection
from sweeper.projection.fastfood.generator import VERSION as GENERATOR
from sweeper.projection.fastfood.generator import max_block_of
from sweeper.training.group_scale import add_scaled

_LAYER = re.compile(r"^(.*?\.layers?\.\d+)\.")


@dataclass(frozen=True)
class SubspaceConfig:
    """What a subspace fine-tune trains and how P is built.

    d: the budget — the number of trainable subspace values, SAID's λ scalars included.
    method: 'did' (one P θ_d over all projected weights) or 'said' (plus a λ per group).
    projection: 'fastfood' (default; O(D log d), no stored state), 'sparse' or 'dense'.
    layout: 'global' (one P over all D), 'per_tensor' (one P per tensor, shared θ_d, unit-norm
        columns overall) or 'per_tensor_unit' (unit-norm columns per tensor, as Aghajanyan et al.).
    seed: seeds P; the same seed always regenerates the same P.
    said_groups: 'layer' (one λ per layer: each transformer layer, else each module) or 'tensor'.
    train_head: False projects the head too (Li et al.); True trains it directly (Aghajanyan
        et al.) — its parameters then count as trainable.
    generator: the Fastfood generator version P is rebuilt with (the current one for anything
        trained now; an older one restores a θ_d trained with it).
    """

    d: int
    method: Literal["did", "said"] = "did"
    projection: Literal["dense", "sparse", "fastfood"] = "fastfood"
    layout: Literal["global", "per_tensor", "per_tensor_unit"] = "global"
    seed: int = 0
    said_groups: Literal["layer", "tensor"] = "layer"
    train_head: bool = False
    generator: int = GENERATOR

    def to_dict(self) -> dict:
        return asdict(self)


def layer_group(name: str) -> str:
    """The layer a parameter belongs to: `encoder.layer.3` for transformers, else its module."""
    match = _LAYER.match(name)
    if match:
        return match.group(1)
    if ".embeddings." in f".{name}":
        return name[: name.index("embeddings") + len("embeddings")]
    return name.rpartition(".")[0] or name


def group_keys(names: Iterable[str], said_groups: str) -> list[str]:
    """SAID's group (one λ each) of every projected parameter."""
    return [layer_group(n) if said_groups == "layer" else n for n in names]


def projected_names(base: nn.Module, config: SubspaceConfig, head: Iterable[str]) -> list[str]:
    """The parameters P writes to: all of them, less the head when it trains directly."""
    head = tuple(head)
    return [n for n, _ in base.named_parameters() if not (config.train_head and _is_head(n, head))]


def _is_head(name: str, head: Iterable[str]) -> bool:
    return any(name == h or name.startswith(h + ".") for h in head)


class SubspaceModel(nn.Module):
    """`base` re-parametrised as θ0 + P θ_d; only θ_d (and λ, and the head if asked) train."""

    def __init__(self, base: nn.Module, config: SubspaceConfig, head: Iterable[str] = ()) -> None:
        super().__init__()
        head = tuple(head)
        self.base = base
        self.config = config
        named = list(base.named_parameters())
        self.projected = projected_names(base, config, head)
        if not self.projected:
            raise ValueError("no parameters left to project")
        for n, p in named:
            p.requires_grad_(config.train_head and _is_head(n, head))
        params = dict(named)
        self.sizes = [params[n].numel() for n in self.projected]
        self.D = sum(self.sizes)
        keys = group_keys(self.projected, config.said_groups)
        groups = list(dict.fromkeys(keys))
        self.group_names = groups if config.method == "said" else []
        self.group_of = [groups.index(k) for k in keys]
        n_lambda = len(self.group_names)
        if config.d - n_lambda < 1:
            raise ValueError(
                f"d={config.d} leaves no room for θ_d: SAID spends {n_lambda} of d on λ scalars; "
                f"use d > {n_lambda}"
            )
        if config.d > self.D + n_lambda:
            raise ValueError(f"d={config.d} exceeds the number of projected weights D={self.D}")
        dtype = params[self.projected[0]].dtype
        self.theta_d = nn.Parameter(torch.zeros(config.d - n_lambda, dtype=dtype))
        self.lam = nn.Parameter(torch.ones(n_lambda, dtype=dtype)) if n_lambda else None
        self.projection = make_projection(
            config.projection,
            self.D,
            config.d - n_lambda,
            config.seed,
            dtype=dtype,
            layout=config.layout,
            sizes=self.sizes,
            max_block=max_block_of(config.generator),
        )

    @property
    def trainable_params(self) -> int:
        """The true count: θ_d, λ, and any parameter trained directly."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # 'triton' on CUDA tensors; tests set 'cpu' to run the same fused path through numba.
    fused_backend: str | None = None
    # 'auto': the fused kernel if it passes its self-test on this device, else the reference
    # path; 'fused' or 'reference' force one (the job's resources.fastfood_kernel).
    fastfood_kernel: str = "auto"

    def effective_parameters(self) -> dict[str, torch.Tensor]:
        """θ0 + (λ ·) P θ_d for every projected parameter, by name."""
        base = dict(self.base.named_parameters())
        if self._fused():
            flat = self._fused_weights(base)
            pieces = flat.split(self.sizes)
            return {
                name: piece.view_as(base[name])
                for name, piece in zip(self.projected, pieces, strict=True)
            }
        theta_d = self.theta_d
        if theta_d.is_cuda and self.config.projection == "fastfood" and not self._trusted():
            theta_d = theta_d.cpu()  # P on the CPU (numba), the Triton kernels left alone
        delta = self.projection(theta_d).to(self.theta_d.device)
        if self.lam is not None:  # SAID: λ applied inside each tensor's one addition
            bases = [base[n] for n in self.projected]
            weights = add_scaled(bases, delta, self.lam, self.group_of)
            return dict(zip(self.projected, weights, strict=True))
        out = {}
        for name, piece in zip(self.projected, delta.split(self.sizes), strict=True):
            out[name] = base[name] + piece.view_as(base[name])
        return out

    def _fused(self) -> bool:
        """Global Fastfood on a GPU (or a forced backend): one kernel writes W = θ0 + λ·PΘ."""
        c = self.config
        wanted = self.theta_d.is_cuda or self.fused_backend is not None
        return wanted and c.projection == "fastfood" and c.layout == "global" and self._trusted()

    def _trusted(self) -> bool:
        return self.kernel_choice()[0] != "reference"

    def kernel_choice(self) -> tuple[str, str]:
        """(kernel, reason): 'fused' (Triton on a GPU, or the forced backend) or 'reference',
        and why. Decided once per device; the first GPU use runs the self-test."""
        key = (self.theta_d.device, self.fused_backend, self.fastfood_kernel)
        if getattr(self, "_kernel", (None,))[0] != key:
            self._kernel = (key, self._choose_kernel())
        return self._kernel[1]

    def _choose_kernel(self) -> tuple[str, str]:
        c = self.config
        if self.fastfood_kernel not in ("auto", "fused", "reference"):
            raise ValueError(
                f"fastfood_kernel must be auto, fused or reference, got {self.fastfood_kernel!r}"
            )
        if c.projection != "fastfood":
            return "reference", f"projection {c.projection!r}: there is no fused kernel"
        if not (self.theta_d.is_cuda or self.fused_backend is not None):
            return "reference", "CPU tensors: Fastfood runs in numba (the fused kernel is for GPUs)"
        if self.fastfood_kernel != "auto":
            return (
                self.fastfood_kernel,
                f"forced by the job (fastfood_kernel: {self.fastfood_kernel})",
            )
        from sweeper.projection import selftest

        verdict = selftest.verdict(self.theta_d.device, self.fused_backend or "triton")
        if not verdict.ok:
            return "reference", verdict.reason
        if c.layout != "global":  # per_tensor: the Triton kernels, one tensor at a time
            return "triton", f"{verdict.reason}; layout per_tensor has no fused kernel"
        return "fused", verdict.reason

    def _fused_weights(self, base: dict[str, torch.Tensor]) -> torch.Tensor:
        from sweeper.projection.fastfood import apply_delta

        # θ0 flat, cached per device: the base tensors are frozen, so it never goes stale
        # (a trained head is never projected). Costs one extra copy of θ0 on the device.
        key = (self.theta_d.device, self.theta_d.dtype)
        if getattr(self, "_theta0", (None, None))[0] != key:
            flat = torch.cat([base[n].detach().reshape(-1) for n in self.projected])
            self._theta0 = (key, flat)
        lam, sizes = None, None
        if self.lam is not None:  # λ per run of consecutive tensors in the same group
            runs: list[tuple[int, int]] = []
            for group, size in zip(self.group_of, self.sizes, strict=True):
                if runs and runs[-1][0] == group:
                    runs[-1] = (group, runs[-1][1] + size)
                else:
                    runs.append((group, size))
            lam = self.lam[torch.tensor([g for g, _ in runs], device=self.lam.device)]
            sizes = [size for _, size in runs]
        return apply_delta(
            self._theta0[1],
            self.theta_d,
            self.config.seed,
            lam=lam,
            group_sizes=sizes,
            column_norm=self.projection.column_norm,
            max_block=self.projection.max_block,
            backend=self.fused_backend,
        )

    # θ's projected weights as the last training forward built them, kept only when an L2 on θ
    # asks for them (train.theta_penalty): otherwise they would hold D more values between steps
    keep_weights: bool = False
    last_weights: dict[str, torch.Tensor] = {}  # noqa: RUF012 (replaced, never mutated)

    def forward(self, *args, **kwargs):
        weights = self.effective_parameters()
        if self.training and self.keep_weights:
            self.last_weights = weights
        return functional_call(self.base, weights, args, kwargs, strict=False)

    @torch.no_grad()
    def rebalance(self) -> None:
        """Move SAID's scale symmetry back to mean |λ| = 1 without changing the function.

        λ_g · P(θ_d) = (λ_g / c) · P(c θ_d) for any c > 0 (P is linear). An optimiser can
        drift along that valley towards λ → 0, where θ_d's gradient vanishes; restarted
        L-BFGS calls this before each restart.
        """
        if self.lam is None:
            return
        scale = self.lam.abs().mean()
        if scale > 0 and torch.isfinite(scale):
            self.lam.div_(scale)
            self.theta_d.mul_(scale)
