"""deepfm 0.1's module paths keep working for one release: every public name of each old flat
module still resolves from its old path (with a DeprecationWarning naming the new home where it
moved), and is the very object of its new home."""

from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path

import pytest

import deepfm

# Each old module and its public names (deepfm 0.1, and synth_settings from just before 0.2).
OLD_NAMES = {
    "deepfm.bundle": "Bundle FORMAT_VERSION OPTIONAL REQUIRED SIGNED",
    "deepfm.calibration": "Calibration FILE METHODS describe fit fit_platt postprocess",
    "deepfm.checkpoint": "CHECKPOINT RUN atomic_path load_checkpoint save_checkpoint write_atomic",
    "deepfm.cli": "build_parser cmd_calibrate cmd_compare cmd_demo cmd_drift cmd_evaluate cmd_explain cmd_export cmd_predict cmd_report cmd_schema cmd_serve cmd_synth cmd_train cmd_tune main",
    "deepfm.compare": "compare to_markdown",
    "deepfm.config": "RunConfig TrainConfig load_config read_options with_overrides",
    "deepfm.dataset": "Batch DatasetWriter EncodedDataset EpochOrder SHUFFLE_BLOCK",
    "deepfm.demo": "SPLIT run_demo",
    "deepfm.distributed": "Context PREPARE_TIMEOUT all_gather_rows broadcast_buffers data_parallel gather_array gather_rows global_batches my_slice setup sum_scalar",
    "deepfm.drift": "FIELD_METRICS GLOBAL_METRICS NUMERIC_BINS PROFILE_FILE TOP Threshold check load_profile profile psi",
    "deepfm.errors": "BundleError ConfigError DataError DeepFMError MissingExtra TrainingError require_extra",
    "deepfm.estimator": "DeepFMClassifier ESTIMATOR_FILE SEPARATORS",
    "deepfm.explain": "Combination Drilldown Explanation PAIR_BATCH PartStats SCALED_BIN SCALED_BINS explain parse_pair write_explanation",
    "deepfm.export": "ENCODING OnnxEngine check_onnx export_onnx graph_inputs input_names random_encoded",
    "deepfm.features": "EncodedChunk FeaturePipeline FieldState SPILL_MEMORY",
    "deepfm.hashing": "FNV_OFFSET FNV_PRIME hash64 hashed_ids",
    "deepfm.io": "BAD_ROW_CHOICES Chunk FORMATS HEADER_CHOICES ReadOptions Reader TableSource as_table record_value to_float to_label to_strings",
    "deepfm.layers": "ACTIVATIONS CrossNetwork FieldEmbedding MLP fm_pairwise pool_bags scale_numeric",
    "deepfm.metrics": "EPS auc calibration logloss roc_curve summary",
    "deepfm.model": "DENSE_ROWS_PER_TABLE_ROW DeepFM INIT_PAIRWISE_STD InputLayout MODEL_KINDS ModelConfig auto_init_std rows_per_table_row",
    "deepfm.optim": "RowAdam deterministic",
    "deepfm.plots": "DPI LABEL_CHARS decomposition drilldown_heatmap explanation_figures learning_curves pair_heatmap reliability require_matplotlib roc",
    "deepfm.predict": "CheckedRecords Engine Predictor TorchEngine calibrate evaluate json_type open_input predict_file scores",
    "deepfm.report": "STYLE build_report write_report",
    "deepfm.sampling": "BLOCK downsample keep_mask offsets_with_end",
    "deepfm.schema": "BINNINGS CRITEO_COLUMNS FieldSpec KINDS Kind NUMERIC_MODES POOLINGS PRESETS Schema TRANSFORMS check_keys coerce_numbers criteo_schema",
    "deepfm.schema_inference": "Guess HEAVY_TAIL LIST_SEPARATORS LIST_SHARE MIN_REPEATS ROUGHNESS SAMPLE_ROWS SMALL_CODE_SET guess_field infer_fields infer_schema number_field schema_yaml",
    "deepfm.serve": "Batcher OFFLOAD_RECORDS RequestError SETTINGS_ENV ServeSettings app_from_env create_app load_predictor parse_records serve settle_gc",
    "deepfm.sharded": "FieldTable INSTALL_HINT ShardedDeepFM ShardedFieldEmbedding field_tables plan_tables rank_batches require_torchrec",
    "deepfm.synth": "BLOCK_ROWS CATEGORICAL_SPECS CHURN_MIN_CARD CRITEO_COLUMNS DAY_BIAS_SHIFT DAY_CHURN EMBED_DIM MLP_HIDDEN NUMERIC_SPECS NUM_CATEGORICAL NUM_NUMERIC RANK_POWER RANK_R0 SynthResult TARGET_CTR generate_table truth_path_for write_synth",
    "deepfm.synth_settings": "SETTINGS SynthSetting get_setting",
    "deepfm.train": "CACHE_FORMAT CURVE_POINTS EPOCH_ORDER History MIN_CALIBRATION_ROWS OVERFIT_DROP Parts TRAIN_METRIC_ROWS Trainer calibrate_on_valid check_resume check_start default_cache_dir parse_split prepare prepare_cached resolve_device resume train",
    "deepfm.tune": "BATCH_SIZES EMBEDDING_DIMS INIT_STDS METRICS MIN_COUNTS suggest to_markdown tune",
    "deepfm.vocab": "DECAY grow_vocabulary",
    "deepfm.warm": "check_compatible row_map warm_start_weights",
}
# Still modules of their own at the top: nothing moved, nothing to warn about.
UNMOVED = {"deepfm.bundle", "deepfm.config", "deepfm.errors"}


@pytest.mark.parametrize("old", sorted(OLD_NAMES))
def test_old_module_paths_resolve_with_a_warning(old: str) -> None:
    shim = Path(deepfm.__file__).parent / f"{old.split('.')[1]}.py"
    if shim.is_file() and "deprecated_module(" in shim.read_text():
        sys.modules.pop(old, None)  # import the alias afresh, so its module-level warning fires here
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
        values = {name: getattr(module, name) for name in OLD_NAMES[old].split()}
    moved = [w for w in caught if issubclass(w.category, DeprecationWarning) and "deepfm" in str(w.message)]
    assert bool(moved) == (old not in UNMOVED), [str(w.message) for w in caught]
    assert all("instead" in str(w.message) for w in moved)
    for name, value in values.items():
        home = getattr(value, "__module__", None)
        if home and home.startswith("deepfm.") and not isinstance(value, (str, int, float, tuple, dict)):
            assert getattr(importlib.import_module(home), name) is value, f"{old}.{name}"


def test_the_package_api_is_unchanged() -> None:
    assert set(deepfm.__all__) == {
        "Bundle",
        "BundleError",
        "ColumnSplit",  # added in 0.2: the split by time of train(split_by=...)
        "ConfigError",
        "DataError",
        "DeepFM",
        "DeepFMError",
        "FieldSpec",
        "ModelConfig",
        "Predictor",
        "ReadOptions",
        "RunConfig",
        "Schema",
        "TrainConfig",
        "criteo_schema",
        "evaluate",
        "load_config",
        "predict_file",
        "resume",
        "train",
        "__version__",
    }
    for name in deepfm.__all__:
        assert getattr(deepfm, name) is not None


def test_old_reader_call_opens_the_files_format(tmp_path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("label,c\n1,x\n0,y\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the test above checks the warning
        from deepfm.io import Reader
    reader = Reader(path)
    assert reader.format == "text" and reader.columns == ["label", "c"]
