"""DeepAR (Salinas et al., 2020) as an nn.Module, architecture-compatible with GluonTS's.

The network reads, per step, ``[lagged scaled targets, cat embeddings, log(scale), covariates]``
(DEEPAR_REFERENCE.md A.9), runs a ``num_layers`` x ``num_cells`` LSTM, and projects the hidden
state to the likelihood's parameters. Tensors in, tensors out: windows and features are cut
beforehand by :mod:`batchcast.forecast.features`; sampling lives in
:mod:`batchcast.forecast.sampling`.

Unlike GluonTS, a model without categorical features has no embedding at all and there are
no static real features (SageMaker's record format has none): GluonTS's dummy inputs (a 1x1
embedding of cat=0 and a static real of 0.0) are constants, so the importer folds them into
the LSTM bias and the two networks compute the same function.

Scaling (``ModelSpec.scaling``): GluonTS divides each window by its context's mean absolute
value (``"mean"``). A trending series whose level is large against its movements then reaches
the network as values all near 1, and the trained network pulls its forecasts towards the
context's mean. ``"std"`` feeds ``(y - mean) / std`` of the context instead and shifts the
distribution back by the mean; batchcast's trainer uses it by default for location families
(``DeepARConfig.scaling``). Models imported from GluonTS, and those saved without the field,
are ``"mean"``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from batchcast.forecast.config import ModelSpec
from batchcast.forecast.likelihoods import Likelihood, get_likelihood

__all__ = ["DeepAR", "WindowScale", "state_shapes"]

# "std" scaling's floor on the standard deviation, relative to the context's mean absolute
# value: a flat context (variance 0) is scaled by 0.1% of its level, not by ~0.
_STD_FLOOR = 1e-3


@dataclass(frozen=True)
class WindowScale:
    """How each window's targets map to the network's units: ``z = (y - loc) / scale``.

    Attributes:
        scale: (B, 1), at least the spec's ``minimum_scale``.
        loc: (B, 1) for ``"std"`` scaling; None for ``"mean"`` (GluonTS's: ``z = y / scale``,
            computed as exactly that, so mean-scaled models keep their bytes).
    """

    scale: torch.Tensor
    loc: torch.Tensor | None = None

    def normalize(self, y: torch.Tensor) -> torch.Tensor:
        """(B, n) targets -> the network's units."""
        return y / self.scale if self.loc is None else (y - self.loc) / self.scale

    def centre(self, y: torch.Tensor) -> torch.Tensor:
        """(B, n) targets less the location: what a likelihood scored with ``scale`` reads."""
        return y if self.loc is None else y - self.loc

    def rows(self, paths: int) -> WindowScale:
        """Each window's scale repeated for its ``paths`` sample paths (row ``b * S + k``)."""
        loc = None if self.loc is None else self.loc.repeat_interleave(paths, dim=0)
        return WindowScale(self.scale.repeat_interleave(paths, dim=0), loc)


def state_shapes(spec: ModelSpec) -> Iterator[tuple[str, tuple[int, ...]]]:
    """The names and shapes of ``DeepAR(spec).state_dict()``, in its order, without building it.

    Pure arithmetic, so a configuration can be checked against a weights file's header before
    anything is allocated (a corrupt ``num_cells`` of 1e9 would ask for hundreds of GB).
    A generator: a caller comparing with a short list stops early, however many layers the
    spec claims.
    """
    for i, (c, d) in enumerate(zip(spec.cardinality, spec.embedding_dims, strict=True)):
        yield f"embedders.{i}.weight", (c, d)
    gates = 4 * spec.num_cells  # input, forget, cell and output gates, stacked (torch's LSTM)
    for layer in range(spec.num_layers):
        width = spec.input_size if layer == 0 else spec.num_cells
        yield f"rnn.weight_ih_l{layer}", (gates, width)
        yield f"rnn.weight_hh_l{layer}", (gates, spec.num_cells)
        yield f"rnn.bias_ih_l{layer}", (gates,)
        yield f"rnn.bias_hh_l{layer}", (gates,)
    num_args = get_likelihood(spec.likelihood).num_args
    yield "head.weight", (num_args, spec.num_cells)
    yield "head.bias", (num_args,)


class DeepAR(nn.Module):
    """The DeepAR network for one :class:`ModelSpec`.

    Args:
        spec: the resolved model signature (sizes, lags, likelihood).
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.likelihood: Likelihood = get_likelihood(spec.likelihood)
        self.embedders = nn.ModuleList(
            nn.Embedding(c, d) for c, d in zip(spec.cardinality, spec.embedding_dims, strict=True)
        )
        self.rnn = nn.LSTM(
            input_size=spec.input_size,
            hidden_size=spec.num_cells,
            num_layers=spec.num_layers,
            dropout=spec.dropout_rate if spec.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.head = nn.Linear(spec.num_cells, self.likelihood.num_args)
        self.lags: torch.Tensor
        self.register_buffer("lags", torch.tensor(spec.lags, dtype=torch.long), persistent=False)

    # -- pieces shared by training and sampling ------------------------------------------------

    def scaling(self, past_target: torch.Tensor, past_observed: torch.Tensor) -> WindowScale:
        """The window's scale (and location) from its observed context.

        ``"mean"``: the mean absolute value (GluonTS's MeanScaler). ``"std"``: the mean, and
        the standard deviation floored at ``_STD_FLOOR`` times the mean absolute value.

        Args:
            past_target: (B, L); past_observed: (B, L) 0/1.

        Returns:
            scale (B, 1) >= ``minimum_scale``. A context with no observed point gets
            ``spec.default_scale`` (or, when None, as GluonTS, the batch-wide mean) and loc 0.
        """
        if not self.likelihood.scaled:
            return WindowScale(torch.ones_like(past_target[:, :1]))
        c = self.spec.context_length
        target, observed = past_target[:, -c:], past_observed[:, -c:]
        num = (target * observed).abs().sum(dim=1, keepdim=True)  # (B, 1)
        count = observed.sum(dim=1, keepdim=True)
        scale = num / count.clamp_min(1.0)
        if self.spec.default_scale is not None:
            default = torch.full_like(scale, self.spec.default_scale)
        else:
            default = num.sum() / count.sum().clamp_min(1.0)
        if self.spec.scaling == "mean":
            scale = torch.where(count > 0, scale, default)
            return WindowScale(scale.clamp_min(self.spec.minimum_scale))
        loc = (target * observed).sum(dim=1, keepdim=True) / count.clamp_min(1.0)
        # The deviation in units of the mean absolute value a: squares of raw deviations
        # overflow float32 from ~1.8e19, far inside the 1e30 a target may reach, while
        # deviations over a are at most ~2 * context_length. std = a * sqrt(var_r + floor^2):
        # the deviation floored at _STD_FLOOR * a.
        a = scale.clamp_min(self.spec.minimum_scale)
        relative = (target - loc) * observed / a
        var = (relative**2).sum(dim=1, keepdim=True) / count.clamp_min(1.0)
        std = a * (var + _STD_FLOOR**2).sqrt()
        seen = count > 0
        return WindowScale(
            torch.where(seen, std, default).clamp_min(self.spec.minimum_scale),
            torch.where(seen, loc, torch.zeros_like(loc)),
        )

    def static_features(self, cat: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``[embeddings..., log(scale)]``: cat (B, n_cat) int64, scale (B, 1) -> (B, E + 1)."""
        parts = [emb(cat[:, i]) for i, emb in enumerate(self.embedders)]
        parts.append(scale.log())
        return torch.cat(parts, dim=-1)

    def rnn_input(
        self, z: torch.Tensor, static: torch.Tensor, covariates: torch.Tensor, first: int
    ) -> torch.Tensor:
        """LSTM inputs for predicting window positions ``first .. first + n - 1``.

        Args:
            z: (B, W) scaled target over the window; position t's lag-l input is z[:, t - l].
            static: (B, E + 1); covariates: (B, n, F) of the predicted positions.
            first: the first predicted position (>= max lag).

        Returns:
            (B, n, K + E + 1 + F) in GluonTS's order: lags, static, covariates.
        """
        n = covariates.shape[1]
        steps = torch.arange(first, first + n, device=z.device)
        index = steps[:, None] - self.lags[None, :]  # (n, K)
        lagged = z[:, index]  # (B, n, K)
        return torch.cat((lagged, static[:, None, :].expand(-1, n, -1), covariates), dim=-1)

    # -- the forward pass ------------------------------------------------------------------------

    def forward(
        self,
        past_target: torch.Tensor,
        past_observed: torch.Tensor,
        covariates: torch.Tensor,
        cat: torch.Tensor,
        future_target: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, WindowScale, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Unroll the LSTM over the context (and, in training, the teacher-forced future).

        Args:
            past_target: (B, L) with ``L = C + max_lag - 1``; past_observed: (B, L).
            covariates: (B, C + P - 1, F).
            cat: (B, n_cat) int64.
            future_target: (B, P), training only.

        Returns:
            params: (B, n, num_args), the distribution of positions ``max_lag .. max_lag + n - 1``
                (``n = C`` at inference: the last one is the first forecast step; ``C + P - 1``
                in training).
            scale: the windows' :class:`WindowScale`.
            state: the LSTM's final ``(h, c)``, each (num_layers, B, num_cells).
            static: (B, E + 1), reused by the sampler.
        """
        scale = self.scaling(past_target, past_observed)
        static = self.static_features(cat, scale.scale)
        if future_target is None:
            z = scale.normalize(past_target)  # (B, L)
            covariates = covariates[:, : self.spec.context_length]
        else:
            z = scale.normalize(torch.cat((past_target, future_target[:, :-1]), dim=1))
        x = self.rnn_input(z, static, covariates, first=self.spec.max_lag)  # z: (B, L [+ P - 1])
        output, state = self.rnn(x)  # (B, n, H)
        params = self.likelihood.domain_map(self.head(output))
        return params, scale, state, static

    def loss(
        self,
        past_target: torch.Tensor,
        past_observed: torch.Tensor,
        covariates: torch.Tensor,
        cat: torch.Tensor,
        future_target: torch.Tensor,
        future_observed: torch.Tensor,
    ) -> torch.Tensor:
        """Mean over series of the observed-weighted negative log-likelihood (GluonTS's loss).

        The scored points are the last ``C - 1`` context points and the ``P`` future points.
        """
        params, scale, _, _ = self(past_target, past_observed, covariates, cat, future_target)
        first = self.spec.max_lag
        target = torch.cat((past_target, future_target), dim=1)[:, first:]  # (B, C + P - 1)
        weight = torch.cat((past_observed, future_observed), dim=1)[:, first:]
        nll = self.likelihood.nll(params, scale.centre(target), scale.scale)  # (B, C + P - 1)
        per_series = (nll * weight).sum(dim=1) / weight.sum(dim=1).clamp_min(1.0)
        return per_series.mean()
