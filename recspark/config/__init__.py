"""Typed job configuration: YAML -> frozen dataclasses, validated before Spark starts.

Every job has one YAML file in ``conf/``. Sections map to dataclasses whose
defaults are the defaults, so a YAML file only states what differs; any value
can be overridden with ``--set section.key=value``. The package reads in the
order a config is built:

- ``loading``: the generic loader (``load_config``, ``with_values``,
  ``flatten``), field ranges (``bounded``) and their one validator;
- ``synthetic``: the demo data generator's spec;
- ``sections``: the sections the jobs share (data, features, split, als, ...);
- ``hyperparameters``: the WARP/BPR hyperparameters, declared once;
- ``search``: the hyperparameter search's ``tune`` section;
- ``jobs``: one dataclass per job; the jobs that train share ``TrainingJob``.
"""

from recspark.config.hyperparameters import (LOSSES, OPTIMISERS, STATE_CHUNK_BYTES, KernelParams, TrainerParams,
                                             WarpConfig)
from recspark.config.jobs import (PRODUCT_NAMES, GenerateConfig, ModelSource, NightlyConfig, ProductsConfig,
                                  PromotionConfig, TrainConfig, TrainingJob, TuneConfig)
from recspark.config.loading import Checked, field_problems, flatten, load_config, to_dict, with_values
from recspark.config.search import ParamRange, PruningConfig, SearchConfig, ValidationSplitConfig
from recspark.config.sections import (AlsConfig, DataConfig, EvaluationConfig, FeatureSource, FeaturesConfig,
                                      MlflowConfig, OutputConfig, SideFeatures, SparkConfig, SplitConfig)
from recspark.config.synthetic import SyntheticSpec

__all__ = [
    "LOSSES", "OPTIMISERS", "PRODUCT_NAMES", "STATE_CHUNK_BYTES",
    "AlsConfig", "Checked", "DataConfig", "EvaluationConfig", "FeatureSource", "FeaturesConfig", "GenerateConfig",
    "KernelParams", "MlflowConfig", "ModelSource", "NightlyConfig", "OutputConfig", "ParamRange", "ProductsConfig",
    "PromotionConfig", "PruningConfig", "SearchConfig", "SideFeatures", "SparkConfig", "SplitConfig",
    "SyntheticSpec", "TrainConfig", "TrainerParams", "TrainingJob", "TuneConfig", "ValidationSplitConfig",
    "WarpConfig", "field_problems", "flatten", "load_config", "to_dict", "with_values",
]
