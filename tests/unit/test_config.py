from pathlib import Path

import pytest

from iea.config import ConfigError, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]


def test_defaults_need_no_file():
    s = load_settings(env={})
    assert s.segment.num_regions == 5
    assert s.filters.t_size == 25 and s.filters.t_clarity == 100 and s.filters.t_conf == 0.7
    assert s.tracking.uri == "sqlite:///mlruns/mlflow.db"


def test_yaml_then_env_then_cli_precedence(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "segment:\n  num_regions: 3\nfilters:\n  t_size: 10\nstore:\n  bucket: from-yaml\n"
    )
    env = {"IEA_FILTERS__T_SIZE": "11", "IEA_STORE__BUCKET": "from-env", "OTHER": "x"}
    s = load_settings(cfg, ["store.bucket=from-cli"], env=env)
    assert s.segment.num_regions == 3  # yaml over default
    assert s.filters.t_size == 11  # env over yaml
    assert s.store.bucket == "from-cli"  # cli over env


def test_all_errors_reported_at_once_with_their_source(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("segment:\n  num_regions: 0\n  bogus: 1\nfilters:\n  t_conf: 2\n")
    with pytest.raises(ConfigError) as e:
        load_settings(cfg, ["runtime.device=tpu", "novalue"], env={})
    problems = e.value.problems
    text = str(e.value)
    assert len(problems) == 5, problems
    assert "override 'novalue': expected key=value" in text
    assert f"{cfg}: segment.num_regions" in text
    assert "segment.bogus: Extra inputs are not permitted" in text
    assert "filters.t_conf" in text
    assert "override 'runtime.device=tpu': runtime.device" in text


def test_later_config_files_override_earlier_ones_key_by_key(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("filters:\n  t_size: 10\n  t_clarity: 50\nstore:\n  bucket: base\n")
    best = tmp_path / "best.yaml"
    best.write_text("filters:\n  t_size: 35\n")
    s = load_settings([base, best], ["store.bucket=cli"], env={})
    assert (s.filters.t_size, s.filters.t_clarity, s.store.bucket) == (35, 50, "cli")
    assert load_settings([best, base], env={}).filters.t_size == 10  # order decides
    assert load_settings([], env={}) == load_settings(None, env={})


def test_errors_of_every_config_file_are_reported_at_once_naming_each(tmp_path):
    one = tmp_path / "one.yaml"
    one.write_text("segment:\n  bogus: 1\n")
    two = tmp_path / "two.yaml"
    two.write_text("filters:\n  t_conf: 2\n")
    with pytest.raises(ConfigError) as e:
        load_settings([one, two, tmp_path / "missing.yaml"], env={})
    text = str(e.value)
    assert len(e.value.problems) == 3, e.value.problems
    assert f"{one}: segment.bogus" in text and f"{two}: filters.t_conf" in text
    assert "missing.yaml: cannot read" in text


def test_unreadable_yaml_is_reported(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("segment: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad, env={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.yaml", env={})


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="store.endpoint is required"):
        load_settings(overrides=["store.backend=s3"], env={})
    with pytest.raises(ConfigError, match="data.src is required"):
        load_settings(overrides=["data.src=null"], env={})


def test_settings_are_frozen():
    s = load_settings(env={})
    with pytest.raises(Exception, match="frozen"):
        s.segment.num_regions = 2  # type: ignore[misc]


def test_every_shipped_config_loads():
    configs = sorted((REPO / "configs").rglob("*.yaml"))
    assert [c.name for c in configs] == ["demo.yaml", "paper.yaml"]
    for c in configs:
        assert isinstance(load_settings(c, env={}), Settings)


def test_the_generator_cut_must_sit_at_or_below_t_conf():
    """With SAM's stock cut (0.88) above the paper's t_conf (0.7), masks between them never
    reach the filter and t_conf = 0.7 could not drop anything the generator keeps."""
    paper = REPO / "configs" / "paper.yaml"
    s = load_settings(paper, env={})
    assert s.segment.pred_iou_thresh <= s.filters.t_conf == 0.7
    assert load_settings(None, env={}).segment.pred_iou_thresh <= Settings().filters.t_conf
    with pytest.raises(
        ConfigError, match=r"segment.pred_iou_thresh \(0.88\) is above filters.t_conf \(0.7\)"
    ):
        load_settings(paper, ["segment.pred_iou_thresh=0.88"], env={})
    with pytest.raises(ConfigError, match="is above filters.t_conf"):
        load_settings(paper, ["filters.t_conf=0.5"], env={})
    assert load_settings(paper, ["filters.t_conf=0.5", "segment.pred_iou_thresh=0.5"], env={})


def test_paper_config_carries_the_paper_settings():
    s = load_settings(REPO / "configs" / "paper.yaml", env={})
    assert (s.segment.num_regions, s.filters.t_size, s.filters.t_clarity, s.filters.t_conf) == (
        5,
        25,
        100,
        0.7,
    )
    assert s.interpreter.model == s.aligner.model == "Qwen/Qwen3-VL-2B-Instruct"
    assert s.jmasa.model == "Qwen/Qwen3-VL-8B-Instruct"
    assert s.fgca.llm == "Qwen/Qwen3-8B"
    assert (s.fgca.n_train, s.fgca.n_val, s.fgca.n_test) == (2000, 500, 500)
    assert s.segment.sam == "vit_h"
    assert s.jmasa.train.finetune == "lora" and s.jmasa.train.epochs == 30


def test_flat_params():
    flat = load_settings(env={}).flat()
    assert flat["segment.num_regions"] == 5
    assert flat["jmasa.lora.target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_model_key_holds_eval_every_only_when_it_changes_the_selection():
    from iea.keys import jmasa_key

    def key(*overrides):
        settings = load_settings(REPO / "configs/demo.yaml", list(overrides), env={})
        return jmasa_key(settings, "d1", "full", "a1")

    base = key()
    assert key("jmasa.train.eval_every=1") == base  # the behaviour before the setting existed
    assert key("jmasa.train.eval_every=2") != base
    assert key("jmasa.train.patience=0") == base  # the keys made before patience existed
    assert key("jmasa.train.patience=2") != base
    assert key("jmasa.train.epochs=31") != base


def test_the_ecosystems_variables_decide_what_no_config_sets(tmp_path):
    env = {
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "MLFLOW_S3_ENDPOINT_URL": "https://minio.example:9000/",
        "AWS_ACCESS_KEY_ID": "ak",
        "AWS_SECRET_ACCESS_KEY": "sk",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }
    s = load_settings(REPO / "configs" / "demo.yaml", env=env)  # it sets no tracking.uri
    assert s.tracking.uri == "http://mlflow:5000"
    assert (s.store.endpoint, s.store.secure, s.store.region) == (
        "minio.example:9000",
        True,
        "eu-west-1",
    )
    assert s.store.access_key.get_secret_value() == "ak"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tracking:\n  uri: sqlite:///x.db\n")
    assert load_settings(cfg, env=env).tracking.uri == "sqlite:///x.db"  # a config wins
    assert load_settings(None, ["tracking.uri=file:/y"], env=env).tracking.uri == "file:/y"
    iea_env = {**env, "IEA_TRACKING__URI": "sqlite:///z.db"}
    assert load_settings(None, env=iea_env).tracking.uri == "sqlite:///z.db"
    # a saved config (a registered model's) is like a config file, but its left-out secrets
    # and unset endpoint come from this environment
    saved = load_settings(cfg, env={}).public_dump()
    back = load_settings(None, env=env, base=saved)
    assert back.tracking.uri == "sqlite:///x.db" and back.store.endpoint == "minio.example:9000"
    assert back.store.secret_key.get_secret_value() == "sk"


def test_setting_sources_name_where_each_value_came_from(tmp_path):
    from iea.config import setting_sources

    cfg = tmp_path / "c.yaml"
    cfg.write_text("filters:\n  t_size: 10\n")
    env = {"MLFLOW_TRACKING_URI": "http://m:5000", "IEA_STORE__BUCKET": "b",
           "AWS_SECRET_ACCESS_KEY": "not-shown"}  # fmt: skip
    src = setting_sources(cfg, ["segment.num_regions=3"], env=env)
    assert src["filters.t_size"] == str(cfg)
    assert src["tracking.uri"] == "env MLFLOW_TRACKING_URI"
    assert src["store.bucket"] == "env IEA_STORE__BUCKET"
    assert src["segment.num_regions"] == "override 'segment.num_regions=3'"
    assert src["runtime.seed"] == "default"
    assert "not-shown" not in repr(src)


def test_an_s3_artifact_root_keeps_its_scheme():
    s = load_settings(overrides=["tracking.artifact_root=s3://iea/mlflow"], env={})
    assert s.tracking.artifact_root == "s3://iea/mlflow"


def test_the_fast_mask_generator_refuses_small_region_removal():
    from iea.config import SegmentSettings

    with pytest.raises(ValueError, match="min_mask_region_area"):
        SegmentSettings(generator="fast", min_mask_region_area=10)
    assert SegmentSettings(generator="fast").generator == "fast"


def test_stage_training_settings_reach_the_engine():
    """``<stage>.train.*`` in the config become the engine's settings, patience included, and
    a patience that is not a count is refused with its key."""
    from flows.train import finetune_config

    s = load_settings(
        REPO / "configs/demo.yaml",
        ["aligner.train.patience=3", "aligner.train.eval_every=2", "jmasa.train.seed=4"],
        env={},
    )
    a, j = finetune_config(s.aligner, s.runtime.seed), finetune_config(s.jmasa, s.runtime.seed)
    assert (a.patience, a.eval_every, a.epochs, a.seed) == (3, 2, s.aligner.train.epochs, 0)
    assert (j.patience, j.seed, j.epochs) == (0, 4, s.jmasa.train.epochs)
    with pytest.raises(Exception, match="patience"):
        load_settings(REPO / "configs/demo.yaml", ["jmasa.train.patience=-1"], env={})
