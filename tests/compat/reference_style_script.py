"""A script in the reference library's style: only its imports were changed (``sleuth`` ->
``acsleuth.compat.sleuth``). tests/compat/test_sleuth_compat.py runs it."""

import argparse
from typing import Dict

import pandas as pd

from acsleuth.compat.sleuth import AnomalyModel, load_pkl
from acsleuth.compat.sleuth._utils import evaluate, update_configs_with_args
from acsleuth.compat.sleuth.configs import AnomalyConfigs

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="ACSleuth for anomaly detection.")
    parser.add_argument("--data_path", type=str, required=True)
    parser.add_argument("--result_path", type=str, required=True)
    parser.add_argument("--gene_dim", type=int, default=3000)
    parser.add_argument("--prepare_epochs", type=int)
    parser.add_argument("--train_epochs", type=int)
    parser.add_argument("--score_epochs", type=int)
    parser.add_argument("--batch_size", type=int)
    parser.add_argument("--learning_rate", type=float)
    parser.add_argument("--n_critic", type=int)
    parser.add_argument("--loss_weight", type=Dict[str, float])
    parser.add_argument("--random_state", type=int)
    args_dict = vars(parser.parse_args())

    ref, tgt, label = load_pkl(args_dict["data_path"])

    configs = AnomalyConfigs(args_dict["gene_dim"])
    update_configs_with_args(configs, args_dict)
    configs.loss_weight["w_rec"] = 40
    configs.Generator["mem_dim"] = 300

    model = AnomalyModel(configs)
    model.detect(ref)
    score = model.predict(tgt)

    roc_auc, ap, f1 = evaluate(label, score)
    config_dict = configs.to_dict()
    config_dict.update(
        {
            "roc_auc": roc_auc,
            "ap": ap,
            "f1": f1,
            "mem_rows": model.G.memory.queue.shape[0],
            "w_rec_used": model.engine.params["reconstruction_weight"],
        }
    )
    results_df = pd.DataFrame({k: [v] for k, v in config_dict.items()})
    results_df.to_csv(args_dict["result_path"], index=False)
