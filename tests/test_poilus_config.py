"""configs/poilus.yaml trains on ALTO pages through the real CLI and lands in MLflow as the poilus experiment."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from htr.cli import main
from htr.data.pages import PageDataModule
from tests.data.page_fixtures import make_pages
from tests.helpers import REPO_ROOT

CONFIG = REPO_ROOT / "configs" / "poilus.yaml"


@pytest.mark.slow
def test_poilus_config_trains_on_generated_alto_pages(tmp_path: Path):
    pages = make_pages(tmp_path / "pages")  # ALTO and PAGE, and the planted bad pages that skip_bad counts
    cli = main(
        [
            "fit",
            "--config",
            str(CONFIG),
            f"--data.init_args.xml=[{pages}]",
            f"--data.init_args.cache_dir={tmp_path / 'cache'}",
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={tmp_path / 'out'}",
        ]
    )
    assert isinstance(cli.datamodule, PageDataModule)
    assert cli.model.net.shortcut is not None
    assert cli.datamodule.counts == {"no_text": 1, "bad": 3}
    documents = {stage: {s.document for s in d.samples} for stage, d in cli.datamodule.datasets.items()}
    assert documents["train"] and documents["val"] and documents["test"]
    assert not (documents["train"] & documents["test"] or documents["val"] & documents["test"])
    run = mlflow.get_run(cli.trainer.logger.run_id)
    assert mlflow.get_experiment(run.info.experiment_id).name == "poilus"
    versions = MlflowClient().search_model_versions("name='htr-poilus'")
    assert run.info.run_id in {v.run_id for v in versions}
