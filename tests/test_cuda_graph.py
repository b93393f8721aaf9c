"""The training step on a GPU: it never waits for the host, and captured as a
CUDA graph (cuda_graph) it trains as the eager step does. Skipped without
CUDA (tools/gpu_session.sh runs them: its check stage selects -k cuda)."""
import pytest
import torch

from packnet.train import GRAPH_WARMUP, Trainer, TrainConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

STEPS = GRAPH_WARMUP + 3  # eager warm-up, the capture, two replays


def _trainer(tmp_path, graph, **kw):
    cfg = TrainConfig(name=f"g-{graph}", out_dir=str(tmp_path), device="cuda", size=(64, 128),
                      batch_size=2, steps=STEPS, log_every=STEPS, ckpt_every=100,
                      progress=False, preview_every=0, cuda_graph=graph, **kw)
    return Trainer(cfg, log=lambda m: None)


def _batches(tr):
    return [torch.utils.data.default_collate([tr.dataset[i], tr.dataset[i + 1]])
            for i in range(0, 2 * STEPS, 2)]


@pytest.mark.parametrize("amp", [False, True], ids=["float32", "bf16"])
def test_graph_trains_as_the_eager_step(tmp_path, amp):
    """Losses at every step and the parameters after them: the graph's equal
    the eager step's to float tolerance (atomics in the image gradients
    make neither bitwise reproducible)."""
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    runs = {}
    for graph in ("off", "on"):
        tr = _trainer(tmp_path, graph, amp=amp)
        losses = [float(tr.train_step(b)["loss"]) for b in _batches(tr)]
        tr.sync()
        runs[graph] = (losses, [p.detach().clone() for p in tr.step_fn.params], tr)
    assert runs["on"][2]._captured is not None and runs["off"][2]._captured is None
    tol = 5e-2 if amp else 1e-3
    for a, b in zip(runs["on"][0], runs["off"][0]):
        assert abs(a - b) <= tol * abs(b), (runs["on"][0], runs["off"][0])
    for p, q in zip(runs["on"][1], runs["off"][1]):
        torch.testing.assert_close(p, q, rtol=tol, atol=tol * 1e-2)


def test_steps_never_synchronise(tmp_path):
    """torch's sync debug mode raises on any host synchronisation: none in a
    few eager steps, nor in graph replays."""
    for graph in ("off", "on"):
        tr = _trainer(tmp_path, graph)
        batches = _batches(tr)
        for b in batches[:GRAPH_WARMUP + 1]:  # warm-up and capture may allocate
            tr.train_step(b)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for b in batches[GRAPH_WARMUP + 1:]:
                tr.train_step(b)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        tr.sync()


def test_a_failed_capture_says_why_and_trains_eagerly(tmp_path):
    logged = []
    tr = _trainer(tmp_path, "on")
    tr.log = logged.append
    real = tr.step_fn.terms

    def syncing(inputs):  # a host read inside the step: capture refuses it
        out, inv = real(inputs)
        if torch.cuda.is_current_stream_capturing():
            float(out["loss"])
        return out, inv
    tr.step_fn.terms = syncing
    losses = [float(tr.train_step(b)["loss"]) for b in _batches(tr)]
    assert all(x == x for x in losses) and tr._captured is None and not tr.graph
    assert any(m.startswith("cuda_graph: the step could not be captured") for m in logged)
