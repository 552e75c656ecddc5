"""Human-evaluation statistics: win rates with bootstrap confidence intervals, Bradley-Terry ratings.

Each vote compares two models on one prompt: a wins, b wins, tie, or both bad. Ties and
"both bad" count as half a win for each side in win rates and ratings (Chatbot Arena counts a
"tie (bothbad)" as a tie, Chiang et al. 2024); their counts are reported apart.

Bradley-Terry (Bradley & Terry 1952): P(i beats j) = p_i / (p_i + p_j), fitted with the
minorization-maximization updates of Hunter (2004). One virtual tie between every pair is a
weak prior that keeps ratings finite when a model never loses. Ratings are shown on the Elo
scale, 400 * log10(p) shifted so the mean rating is 1000: a 400-point gap means 10:1 odds.

Confidence intervals are percentile bootstraps (Efron & Tibshirani 1993): votes are resampled
with replacement `n_boot` times and the 2.5th and 97.5th percentiles of each statistic kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

OUTCOMES = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}  # a's share of the point
PRIOR_TIES = 1.0  # virtual ties per pair of models
ELO_BASE, ELO_SCALE = 1000.0, 400.0


def bradley_terry(wins: np.ndarray, games: np.ndarray, iters: int = 200) -> np.ndarray:
    """Strengths p (..., M), geometric mean 1, from wins[..., i, j] (points of i against j) and
    games[..., i, j] (games between i and j, symmetric); leading dims are independent fits."""
    m = wins.shape[-1]
    off = 1.0 - np.eye(m)
    w = wins + 0.5 * PRIOR_TIES * off
    n = games + PRIOR_TIES * off
    total = w.sum(-1)  # (..., M) points of each model
    p = np.ones(wins.shape[:-1])
    for _ in range(iters):
        denom = (n / (p[..., :, None] + p[..., None, :])).sum(-1)
        p = total / denom
        p = p / np.exp(np.log(p).mean(-1, keepdims=True))
    return p


def elo(p: np.ndarray) -> np.ndarray:
    r = ELO_SCALE * np.log10(p)
    return ELO_BASE + r - r.mean(-1, keepdims=True)


def _ci(samples: np.ndarray) -> list:
    """2.5th and 97.5th percentiles along axis 0, NaN-aware; None where no sample has a value."""
    out = []
    for col in np.atleast_2d(samples.T):
        col = col[~np.isnan(col)]
        out.append(
            None if col.size == 0 else [float(np.percentile(col, 2.5)), float(np.percentile(col, 97.5))]
        )
    return out


def summarize(votes: Sequence[dict], models: Sequence[str], n_boot: int = 1000, seed: int = 0) -> dict:
    """Per model: games, wins/losses/ties/both_bad, win rate + CI, rating + CI, mean 1-5 score + CI;
    per pair: the same counts and a's win rate + CI. `votes` hold model_a, model_b, winner
    ('a', 'b', 'tie', 'both_bad'), score_a, score_b (1-5 or None)."""
    models = list(models)
    index = {m: k for k, m in enumerate(models)}
    M, n = len(models), len(votes)
    votes = [v for v in votes if v["model_a"] in index and v["model_b"] in index]
    n = len(votes)
    a = np.array([index[v["model_a"]] for v in votes], dtype=int)
    b = np.array([index[v["model_b"]] for v in votes], dtype=int)
    s = np.array([OUTCOMES[v["winner"]] for v in votes], dtype=float)
    # Per vote, one-hot contributions: points and games for every (i, j) cell.
    pts = np.zeros((n, M, M))
    gms = np.zeros((n, M, M))
    pts[np.arange(n), a, b] = s
    pts[np.arange(n), b, a] = 1.0 - s
    gms[np.arange(n), a, b] = 1.0
    gms[np.arange(n), b, a] = 1.0
    score_sum = np.zeros((n, M))
    score_cnt = np.zeros((n, M))
    for k, v in enumerate(votes):
        for side, model in (("score_a", a[k]), ("score_b", b[k])):
            if v.get(side) is not None:
                score_sum[k, model] += v[side]
                score_cnt[k, model] += 1

    def stats(weights: np.ndarray) -> dict[str, np.ndarray]:
        """Statistics of resamples (B, n vote counts) -> arrays with a leading B axis."""
        W = np.einsum("bn,nij->bij", weights, pts)
        G = np.einsum("bn,nij->bij", weights, gms)
        with np.errstate(invalid="ignore", divide="ignore"):
            win_rate = W.sum(-1) / G.sum(-1)
            pair_rate = W / G
            score = (weights @ score_sum) / (weights @ score_cnt)
        return {
            "win_rate": win_rate,
            "pair_rate": pair_rate,
            "rating": elo(bradley_terry(W, G)),
            "score": score,
        }

    point = {k: v[0] for k, v in stats(np.ones((1, n))).items()}
    rng = np.random.default_rng(seed)
    if n and n_boot:
        draws = rng.integers(0, n, size=(n_boot, n))
        weights = np.stack([np.bincount(d, minlength=n) for d in draws]).astype(float)
        boot = stats(weights)
    else:
        boot = {k: np.full((1,) + v.shape, np.nan) for k, v in point.items()}

    G1 = gms.sum(0)
    rate_ci, rating_ci, score_ci = _ci(boot["win_rate"]), _ci(boot["rating"]), _ci(boot["score"])
    out_models = []
    for k, name in enumerate(models):
        mine = [v for v in votes if name in (v["model_a"], v["model_b"])]
        won = sum(
            1 for v in mine if v["winner"] in ("a", "b") and (v["winner"] == "a") == (v["model_a"] == name)
        )
        ties = sum(1 for v in mine if v["winner"] == "tie")
        bad = sum(1 for v in mine if v["winner"] == "both_bad")
        n_scores = int(score_cnt[:, k].sum())
        out_models.append(
            {
                "name": name,
                "games": int(G1[k].sum()),
                "wins": won,
                "losses": len(mine) - won - ties - bad,
                "ties": ties,
                "both_bad": bad,
                "win_rate": _num(point["win_rate"][k]),
                "win_rate_ci": rate_ci[k],
                "rating": _num(point["rating"][k]),
                "rating_ci": rating_ci[k],
                "mean_score": _num(point["score"][k]),
                "score_ci": score_ci[k] if n_scores else None,
                "scores": n_scores,
            }
        )
    out_models.sort(key=lambda r: -(r["rating"] or 0))
    pairs = []
    for i in range(M):
        for j in range(i + 1, M):
            if G1[i, j] == 0:
                continue
            sel = [v for v in votes if {v["model_a"], v["model_b"]} == {models[i], models[j]}]
            i_wins = sum(
                1
                for v in sel
                if v["winner"] in ("a", "b") and (v["model_a"] == models[i]) == (v["winner"] == "a")
            )
            ties = sum(1 for v in sel if v["winner"] == "tie")
            bad = sum(1 for v in sel if v["winner"] == "both_bad")
            col = boot["pair_rate"][:, i, j][:, None]
            pairs.append(
                {
                    "a": models[i],
                    "b": models[j],
                    "games": len(sel),
                    "a_wins": i_wins,
                    "b_wins": len(sel) - i_wins - ties - bad,
                    "ties": ties,
                    "both_bad": bad,
                    "a_win_rate": _num(point["pair_rate"][i, j]),
                    "a_win_rate_ci": _ci(col)[0],
                }
            )
    return {
        "votes": n,
        "bootstrap": n_boot,
        "models": out_models,
        "pairs": pairs,
        "method": "ties and both-bad count half; Bradley-Terry (MM) on the Elo scale, mean 1000; "
        f"95% percentile bootstrap over votes ({n_boot} resamples)",
    }


def _num(x: float) -> float | None:
    return None if x is None or np.isnan(x) else float(x)
