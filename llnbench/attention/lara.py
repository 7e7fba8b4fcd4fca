"""LARA, linear randomized attention (arXiv 2204.04667; code HKUNLP/efficient-attention).

RA (ra.py) gives each query its own proposal and costs O(N^2). LARA shares C proposals
N(mu_c, sigma^2 I) among all queries, draws one sample w_c from each, weighs the samples per query by
multiple importance sampling with query-specific weights alpha_nc (summing to 1 over c), and
self-normalises: biased but consistent, O(C N d). Units are raw, as in ra.py: l(x, w) =
(w.x - |x|^2 / 2) / sqrt(d).

Per (b, h), in log space (spec §4.3; ``lara_weights`` takes the samples w as an argument):
  1. w_c = mu_c + sigma eps_c in training, mu_c in eval (S = ``samples_per_proposal`` rows per c).
  2. Lq[c, n] = l(q_n, w_c);  Lk[c, m] = l(k_m, w_c), -inf on padded keys.
  3. u_c = softmax_m(Lk[c]) @ v;  logZ_c = logsumexp_m Lk[c, m].
  4. Lmu[c, c'] = l(mu_c', w_c), -inf on invalid slots c';  own_c = Lmu[c, c].
  5. balance heuristic bh_c = exp(own_c - logsumexp_c' Lmu[c, c']).
  6. rho[c, n] = softmax over real queries n of q̄_c . q_n / sqrt(d);  corr = rho - mean over valid c.
  7. alpha[c, n] = max(bh_c + alpha_coeff corr[c, n], 1e-8).
  8. logit[c, n] = ln alpha[c, n] + Lq[c, n] + logZ_c - own_c  (-inf on invalid slots).
  9. out_n = sum_c softmax_c(logit[:, n]) u_c.
``mis_type="bh"`` drops alpha and uses logsumexp_c' Lmu[c, c'] in place of own_c.

Landmarks (``proposal="adaptive-1d"``): q' = LN(Linear(q)), k' = LN(Linear(k)), one pair per layer
shared across heads; q̄_c, k̄_c are their means over C consecutive segments of each sequence's real
tokens (every real token is a segment when n_b <= C; slots beyond are invalid); mu_c = q̄_c + k̄_c.
``proposal="no-param"`` takes plain segment means of q and k.

Open points decided (spec §8): C = 64 (#12); segments over real tokens (#13); noise ``code`` (#14:
sigma = 1 raw, what the release trains with; eval is identical); alpha_coeff 1 (#15); rho normalised
over queries as in the code (#16). Quirks of the release not copied: padded tokens are excluded from
the segment means and from rho's softmax, and extra samples per proposal do not count mu twice in the
balance heuristic (its columns are the C proposals, its rows the C * S samples).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llnbench.attention.base import Attention, full_precision, key_mask_of, upcast_and_zero_padding
from llnbench.attention.ra import NOISES, log_features, noise_std
from llnbench.errors import ConfigError, one_of

MIS_TYPES = ("opt", "bh")
PROPOSALS = ("adaptive-1d", "no-param")
_ALPHA_FLOOR = 1e-8


def segment_matrix(
    key_mask: Tensor | None, batch: int, n: int, num_segments: int, *, like: Tensor
) -> tuple[Tensor, Tensor]:
    """Averaging matrix (B, C, N) over C consecutive segments of each sequence's real tokens.

    With n_b real tokens: every real token is its own segment when n_b <= C; otherwise, with
    p = n_b // C and r = n_b mod C, the first C - r segments hold p tokens and the last r hold p + 1.
    Also returns the (B, C) valid slots (c < min(C, n_b)). ``like`` gives the dtype and device.
    """
    c = num_segments
    if key_mask is None:
        real = torch.ones(batch, n, dtype=torch.bool, device=like.device)
    else:
        real = key_mask
    count = real.sum(-1, keepdim=True)  # (B, 1)
    rank = real.long().cumsum(-1) - 1  # index among the real tokens
    p = (count // c).clamp_min(1)
    r = count % c
    short = (c - r) * p  # tokens in the segments of length p
    seg = torch.where(rank < short, rank // p, (c - r) + (rank - short) // (p + 1))
    seg = torch.where(count <= c, rank, seg)
    slots = torch.arange(c, device=like.device)
    member = (seg[:, None, :] == slots[None, :, None]) & real[:, None, :]
    size = member.sum(-1, keepdim=True)
    return member.to(like.dtype) / size.clamp_min(1).to(like.dtype), size.squeeze(-1) > 0


def lara_weights(
    q: Tensor,
    k: Tensor,
    mu: Tensor,
    w: Tensor,
    q_bar: Tensor,
    key_mask: Tensor | None,
    valid: Tensor,
    *,
    mis_type: str = "opt",
    alpha_coeff: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Steps 2-9 for injected samples. Returns beta and the key probabilities, both (B, H, C*S, N).

    q, k (B, H, N, d) with finite padded rows; mu, q_bar (B, H, C, d); w (B, H, C, S, d), the S samples
    of proposal c; valid (B, C). Then out = beta^T (probs @ v) and P = beta^T probs.
    """
    b, h, c, s, d = w.shape
    rows = w.reshape(b, h, c * s, d)
    proposal = torch.arange(c, device=w.device).repeat_interleave(s)  # proposal of each row
    row_valid = valid[:, proposal][:, None, :]  # (B, 1, R)

    lq = log_features(q, rows)  # (B, H, R, N)
    lk = log_features(k, rows)
    if key_mask is not None:
        lk = lk.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    probs = torch.softmax(lk, dim=-1)
    log_z = torch.logsumexp(lk, dim=-1)  # (B, H, R)

    lmu = log_features(mu, rows).masked_fill(~valid[:, None, None, :], float("-inf"))  # (B,H,R,C)
    log_mix = torch.logsumexp(lmu, dim=-1)
    if mis_type == "bh":
        logits = lq + (log_z - log_mix).unsqueeze(-1)
    else:
        own = lmu.gather(-1, proposal.expand(b, h, -1).unsqueeze(-1)).squeeze(-1)
        own = own.masked_fill(~row_valid, 0.0)  # invalid rows are dropped below; keep them finite
        balance = torch.exp(own - log_mix)
        rho_logits = (q_bar * d**-0.5) @ q.transpose(-1, -2)  # (B, H, C, N)
        if key_mask is not None:
            rho_logits = rho_logits.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        rho = torch.softmax(rho_logits, dim=-1)
        slot_weight = valid[:, None, :, None].to(rho.dtype)
        rho_mean = (rho * slot_weight).sum(-2, keepdim=True) / slot_weight.sum(-2, keepdim=True)
        corr = rho - rho_mean
        if s > 1:  # rows (c, s) share proposal c's correction
            corr = corr.repeat_interleave(s, dim=2)
        alpha = balance.unsqueeze(-1) + alpha_coeff * corr
        logits = alpha.clamp_min(_ALPHA_FLOOR).log() + lq + (log_z - own).unsqueeze(-1)
    logits = logits.masked_fill(~row_valid.unsqueeze(-1), float("-inf"))
    return torch.softmax(logits, dim=-2), probs


class LARAAttention(Attention):
    name = "lara"
    supports_causal = False
    linear_in_n = True
    stochastic = True
    complexity = "O(C N d + C^2 d)"

    def __init__(
        self,
        *,
        num_heads: int,
        head_dim: int,
        causal: bool = False,
        dropout: float = 0.0,
        num_landmarks: int = 64,
        mis_type: str = "opt",
        alpha_coeff: float = 1.0,
        noise: str = "code",
        samples_per_proposal: int = 1,
        proposal: str = "adaptive-1d",
    ):
        super().__init__(num_heads=num_heads, head_dim=head_dim, causal=causal, dropout=dropout)
        if mis_type not in MIS_TYPES:
            raise one_of("LARA mis_type", mis_type, MIS_TYPES)
        if noise not in NOISES:
            raise one_of("LARA noise", noise, NOISES)
        if proposal not in PROPOSALS:
            raise one_of("LARA proposal", proposal, PROPOSALS)
        if num_landmarks < 1 or samples_per_proposal < 1:
            raise ConfigError(
                "LARA num_landmarks and samples_per_proposal must be positive, got "
                f"{num_landmarks}, {samples_per_proposal}"
            )
        self.num_landmarks = int(num_landmarks)
        self.mis_type = mis_type
        self.alpha_coeff = float(alpha_coeff)
        self.noise = noise
        self.sigma = noise_std(noise, head_dim)
        self.samples_per_proposal = int(samples_per_proposal)
        self.proposal = proposal
        if proposal == "adaptive-1d":
            self.q_proj, self.k_proj = nn.Linear(head_dim, head_dim), nn.Linear(head_dim, head_dim)
            self.q_norm, self.k_norm = nn.LayerNorm(head_dim), nn.LayerNorm(head_dim)
            for linear in (self.q_proj, self.k_proj):
                nn.init.trunc_normal_(linear.weight, std=0.02)
                nn.init.zeros_(linear.bias)

    def options(self) -> dict[str, object]:
        return {
            "num_landmarks": self.num_landmarks,
            "mis_type": self.mis_type,
            "alpha_coeff": self.alpha_coeff,
            "noise": self.noise,
            "samples_per_proposal": self.samples_per_proposal,
            "proposal": self.proposal,
        }

    def landmarks(
        self, q: Tensor, k: Tensor, key_mask: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """q_bar and mu = q_bar + k_bar (B, H, C, d), and the (B, C) valid slots."""
        if self.proposal == "adaptive-1d":
            q = _linear_norm(q, self.q_proj, self.q_norm)
            k = _linear_norm(k, self.k_proj, self.k_norm)
        seg, valid = segment_matrix(key_mask, q.shape[0], q.shape[2], self.num_landmarks, like=q)
        q_bar = seg[:, None] @ q
        return q_bar, q_bar + seg[:, None] @ k, valid

    def draw(self, mu: Tensor) -> Tensor:
        """(B, H, C, S, d) samples: mu + sigma eps in training (reparameterised), mu in eval (S = 1)."""
        if not self.training:
            return mu.unsqueeze(-2)
        shape = (*mu.shape[:-1], self.samples_per_proposal, mu.shape[-1])
        noise = torch.randn(shape, dtype=mu.dtype, device=mu.device)
        return mu.unsqueeze(-2) + self.sigma * noise

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        key_mask = key_mask_of(attention_mask, q)
        out_dtype = v.dtype
        with full_precision(q.device):
            q, k, v = upcast_and_zero_padding(key_mask, q, k, v)
            q_bar, mu, valid = self.landmarks(q, k, key_mask)
            beta, probs = lara_weights(
                q,
                k,
                mu,
                self.draw(mu),
                q_bar,
                key_mask,
                valid,
                mis_type=self.mis_type,
                alpha_coeff=self.alpha_coeff,
            )
            out = beta.transpose(-1, -2) @ (probs @ v)
            self._log(beta, key_mask)
        return out.to(out_dtype)

    @torch.no_grad()
    def _log(self, beta: Tensor, key_mask: Tensor | None) -> None:
        """Effective number of samples per real query, 1 / sum_c beta^2 (1 = one proposal wins)."""
        ess = 1.0 / beta.square().sum(-2)  # (B, H, N)
        if key_mask is None:
            self.last_stats = {"ess": ess.mean()}
        else:
            weight = key_mask[:, None, :].to(ess.dtype)
            self.last_stats = {"ess": (ess * weight).sum() / (weight.sum() * ess.shape[1])}

    def attention_matrix(
        self, q: Tensor, k: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        key_mask = key_mask_of(attention_mask, q)
        with full_precision(q.device):
            q, k = upcast_and_zero_padding(key_mask, q, k)
            q_bar, mu, valid = self.landmarks(q, k, key_mask)
            beta, probs = lara_weights(
                q,
                k,
                mu,
                mu.unsqueeze(-2),  # the eval samples, whatever the module's mode
                q_bar,
                key_mask,
                valid,
                mis_type=self.mis_type,
                alpha_coeff=self.alpha_coeff,
            )
            return beta.transpose(-1, -2) @ probs


def _linear_norm(x: Tensor, linear: nn.Linear, norm: nn.LayerNorm) -> Tensor:
    """LayerNorm(Linear(x)) in x's dtype (the core's fp32/fp64, whatever the parameters' dtype)."""
    x = F.linear(x, linear.weight.to(x.dtype), linear.bias.to(x.dtype))
    return F.layer_norm(
        x, norm.normalized_shape, norm.weight.to(x.dtype), norm.bias.to(x.dtype), norm.eps
    )
