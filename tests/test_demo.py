"""``make demo-fast``: the whole miniature study (pretrain 3 models, evaluate 4 models on 5 tasks,
build the leaderboard) on a tiny world, in a scratch directory."""
import subprocess
import sys
import pytest

@pytest.mark.slow
def test_demo_fast_end_to_end(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "leaderboard.demo", "--fast"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "outputs" / "demo-fast"
    records = sorted((out / "results").glob("*.json"))
    assert len(records) == 4 * 5 * 2  # models x tasks x (attentive, linear), one seed
    for f in ("leaderboard.md", "leaderboard.csv", "index.html"):
        assert (out / "leaderboard" / f).stat().st_size > 0
    for model in ("random_t", "mae_t", "layerlock_t", "latent_nofreeze_t"):
        assert f"| {model} |" in proc.stdout
