"""Two processes (torchrun, gloo on CPU) train one shared model: after a step both ranks hold the same
parameters, equal to one process taking the same step on the same global batch."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from test_train import env, quick_config  # noqa: F401  (module fixture: dataset + tiny model)

SCRIPT = textwrap.dedent("""
    import sys, torch
    from transformers import TrainerCallback
    from bearrec.train import load_config, train

    class SaveRank(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, **kw):
            torch.save({k: v.detach().clone() for k, v in model.state_dict().items()},
                       f"{sys.argv[1]}/rank{args.process_index}.pt")

    train(load_config(None, sys.argv[2:]), callbacks=[SaveRank()])
    torch.distributed.barrier()  # as `bearrec train` does: no rank exits while rank 0 still writes,
    torch.distributed.destroy_process_group()  # and no gloo group is left to interpreter teardown (SIGABRT)
""")

# one SGD step on the whole 4-row training set; SGD (not Adam) so that a wrong loss scale would show
STEP = ["objective.name=bear", "max_train_rows=4", "training.max_steps=1", "training.optim=sgd",
        "training.learning_rate=1.0", "training.eval_strategy=no", "training.save_strategy=no",
        "training.load_best_model_at_end=false", "training.use_cpu=true"]


@pytest.mark.multiproc
def test_two_processes_train_one_model_like_one_process_with_the_global_batch(env, tmp_path):  # noqa: F811
    cfg = quick_config(env, tmp_path / "ddp", *STEP, "training.per_device_train_batch_size=2")
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT)
    overrides = [f"dataset={cfg.dataset}", f"output_dir={cfg.output_dir}", f"model={cfg.model}", "template=compact",
                 *[f"training.{k}={v}" for k, v in cfg.training.items()], *STEP]
    out = tmp_path / "ranks"
    out.mkdir()
    environ = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--standalone", str(script), str(out), *overrides],
                          capture_output=True, text=True, timeout=120, env=environ)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    single = tmp_path / "single"
    from bearrec.train import train
    from safetensors.torch import load_file

    train(quick_config(env, single, *STEP, "training.per_device_train_batch_size=4"))
    one = load_file(str(single / "model" / "model.safetensors"))
    base = load_file(str(env[1] / "model.safetensors"))
    assert any(not torch.allclose(one[k], base[k]) for k in one)  # the step moved the weights
    for k in one:
        assert torch.equal(r0[k], r1[k]), k
        assert torch.allclose(r0[k], one[k], atol=1e-5), k
