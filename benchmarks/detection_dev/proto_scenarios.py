"""Scenario lists for the prototype (mirrors what benchmarks/eval_detection.py will hold)."""

B, MONO, NK, DC, CD34 = "CD19+ B", "CD14+ Monocyte", "CD56+ NK", "Dendritic", "CD34+"
TREG, CD8, NAIVE8, MEM4 = (
    "CD4+/CD25 T Reg",
    "CD8+ Cytotoxic T",
    "CD8+/CD45RA+ Naive Cytotoxic",
    "CD4+/CD45RO+ Memory",
)


def P(family, held, ratio=None, batches=1, sd=0.5):
    return {
        "family": family,
        "kind": "pbmc",
        "held": list(held),
        "ratio": ratio,
        "batches": batches,
        "sd": sd,
    }


def S(family, n_anom, ratio, batches=1, sd=0.5):
    return {
        "family": family,
        "kind": "synthetic",
        "n_anom": n_anom,
        "ratio": ratio,
        "batches": batches,
        "sd": sd,
    }


DEV = [
    P("single", [MONO]),
    P("single", [NK]),
    P("single", [CD8]),
    P("multi", [B, NK]),
    P("multi", [MONO, CD8]),
    P("multi", [TREG, NAIVE8]),
    P("multi", [B, MONO, NK, DC], 0.5),
    P("ratio", [MONO, NK], 0.05),
    P("ratio", [MONO, NK], 0.6),
    P("ratio", [B, NK], 0.3),
    P("batch", [B, MONO, NK], None, 2, 1.0),
    P("batch", [MONO, CD8], None, 2, 0.5),
    P("batch", [TREG, NAIVE8], 0.3, 2, 1.5),
    S("synthetic", 3, 0.05),
    S("synthetic", 3, 0.3, 2, 1.0),
]
HELD = [
    P("single", [B]),
    P("single", [DC]),
    P("single", [TREG]),
    P("multi", [B, MONO, NK]),
    P("multi", [MEM4, CD8, NAIVE8]),
    P("multi", [MONO, DC, CD34], 0.5),
    P("multi", [B, NK, DC, CD34, TREG], 0.4),
    P("ratio", [B, MONO, NK], 0.05),
    P("ratio", [B, MONO, NK], 0.2),
    P("ratio", [DC, CD8], 0.6),
    P("batch", [B, MONO, NK], None, 2, 0.5),
    P("batch", [B, MONO, NK], None, 2, 2.0),
    P("batch", [MEM4, CD8, NAIVE8], 0.2, 2, 1.5),
    S("synthetic", 4, 0.1, 2, 2.0),
    S("synthetic", 4, 0.6),
]
