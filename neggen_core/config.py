"""Typed configuration: pydantic models loaded from YAML, plus `section.key=value` overrides.

The defaults are the demo configuration (`configs/demo.yaml` spells them out). Relative input
paths in a config file are resolved against that file's folder; `artifacts.root` and paths given
on the command line are resolved against the current directory.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from neggen_core.errors import ConfigError

DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"  # torch devices: see neggen_core/devices.py
DatasetFormat = Literal["amazon2014", "amazon2018", "amazon2023", "mmrec", "index_json"]
DemoScale = Literal["small", "baby"]


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ArtifactsConfig(StrictModel):
    root: str = Field(
        "./artifacts",
        description="Folder or fsspec URI (memory://, s3://, gs://) that holds every artifact.",
    )
    lock_timeout_s: float = Field(
        3600.0,
        ge=0,
        description="How long a stage waits for another run building in the same dataset "
        "(a lock on a local disk; object stores are not locked) before failing.",
    )


class DemoConfig(StrictModel):
    scale: DemoScale = Field(
        "small", description="small: hundreds of users; baby: Amazon Baby size."
    )
    seed: int = Field(7, description="Seed of the synthetic catalogue and its users.")


class DatasetConfig(StrictModel):
    name: str = Field(
        "demo-small",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Folder name of this dataset under the artifact root.",
    )
    format: DatasetFormat = Field("amazon2014", description="Input format of the source files.")
    interactions: str | None = Field(
        None, description="Reviews / interactions file (gzip or plain); unset for the demo."
    )
    items: str | None = Field(
        None, description="Item metadata / text file (gzip or plain), optional for mmrec."
    )
    demo: DemoConfig | None = Field(
        None, description="Generate the synthetic demo catalogue instead of reading files."
    )
    image_root: str | None = Field(
        None,
        description="The folder (or fsspec URI) item images may be read from; an image_uri "
        "outside it is not read. Default: the folder of the metadata file (of the demo).",
    )
    fetch_images: bool = Field(
        False,
        description="Fetch http(s) image URLs (timeout, size limit, http(s) redirects only); "
        "off: such items are text-only. Never file://, chained or other URLs.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> DatasetConfig:
        if (self.demo is None) == (self.interactions is None):
            raise ValueError(
                "set exactly one of dataset.interactions (a source file) or dataset.demo "
                "(the generated demo catalogue)"
            )
        if self.demo is not None and self.format != "amazon2014":
            raise ValueError("the demo catalogue is written in the amazon2014 format")
        if self.interactions is not None and self.format != "mmrec" and self.items is None:
            raise ValueError(f"format {self.format!r} needs dataset.items (the metadata file)")
        return self


def _demo_dataset() -> DatasetConfig:
    return DatasetConfig(demo=DemoConfig())


class IngestConfig(StrictModel):
    k_core: StrictInt = Field(
        5, ge=0, description="Iterative k-core: users and items keep at least k interactions."
    )
    max_line_bytes: StrictInt = Field(
        1 << 20,
        ge=1024,
        description="A line longer than this is quarantined unparsed (memory stays bounded).",
    )


class VllmConfig(StrictModel):
    base_url: str = Field(
        "http://localhost:8000/v1", description="The vLLM server's OpenAI-compatible API root."
    )
    model: str = Field("Qwen/Qwen2.5-VL-7B-Instruct", description="The served model's name.")
    api_key_env: str | None = Field(
        "VLLM_API_KEY", description="Environment variable holding the API key (never the key)."
    )
    concurrency: int = Field(32, ge=1, description="Requests in flight at once.")
    timeout_s: float = Field(60.0, gt=0, description="Per-request timeout.")
    max_retries: int = Field(
        4, ge=0, description="Retries on timeouts, connection errors, 429, 5xx."
    )
    backoff_s: float = Field(0.5, ge=0, description="First retry delay; doubles, with jitter.")
    backoff_max_s: float = Field(20.0, ge=0, description="Longest retry delay.")
    temperature: float = Field(
        0.0, ge=0, description="Template 1's sampling temperature (0: greedy decoding)."
    )
    negatives_temperature: float = Field(
        0.7,
        ge=0,
        description="Templates 2 and 3's sampling temperature, with a seed of each negative's "
        "own, so that a positive's negatives differ (0: greedy; they then repeat, and the "
        "repeats are dropped as duplicates).",
    )
    max_completion_tokens: int = Field(
        1024,
        ge=16,
        description="Reply token limit; a reply cut off at it is asked once more with twice "
        "the limit, within the server's max_model_len.",
    )
    max_pixels: int = Field(
        1280 * 28 * 28,
        ge=28 * 28,
        description="Images are downscaled (aspect kept) to at most this many pixels before "
        "they are sent; the server's --mm-processor-kwargs max_pixels should be the same "
        "(1280*28*28: at most 1280 image tokens on Qwen2.5-VL).",
    )
    seed: int = Field(0, description="Template 1's sampling seed, sent when it samples.")

    @model_validator(mode="before")
    @classmethod
    def _renamed_max_tokens(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_tokens" in data:
            warnings.warn(
                "llm.vllm.max_tokens is now llm.vllm.max_completion_tokens (the name vLLM's "
                "API uses); max_tokens is read as max_completion_tokens for now, rename it",
                FutureWarning,
                stacklevel=2,
            )
            data = dict(data)
            data.setdefault("max_completion_tokens", data.pop("max_tokens"))
        return data


class LlmConfig(StrictModel):
    backend: Literal["lexicon", "vllm"] = Field(
        "lexicon",
        description="lexicon: attribute lexicons, sentence encoder, Pillow (CPU, no network); "
        "vllm: a vLLM server's OpenAI-compatible API.",
    )
    zero_shot: bool = Field(
        True, description="Lexicon: match material and style with the sentence encoder."
    )
    max_invalid_share: float = Field(
        0.05,
        ge=0,
        le=1,
        description="The attributes stage fails rather than commits when more than this share "
        "of items got no valid reply (not part of the version: raising it lets a rerun commit).",
    )
    vllm: VllmConfig = Field(default_factory=VllmConfig)

    @field_validator("backend", mode="before")
    @classmethod
    def _renamed_backend(cls, value: Any) -> Any:
        if value == "offline":
            warnings.warn(
                "llm.backend: 'offline' is now called 'lexicon' (it is not vLLM's offline "
                "engine); 'offline' is read as 'lexicon' for now, write 'lexicon' instead",
                FutureWarning,
                stacklevel=2,
            )
            return "lexicon"
        return value


class AttributesConfig(StrictModel):
    batch_size: int = Field(256, ge=1, description="Items per part file (and per resume step).")
    key_features: int = Field(3, ge=1, description="Key attributes per category (at most).")
    category_level: int = Field(
        1, ge=0, description="Category path level that groups items for key features."
    )


class NegativesConfig(StrictModel):
    per_item: int = Field(4, ge=1, description="Negatives per positive item.")
    interventions: int = Field(1, ge=1, le=2, description="Key features changed per negative.")
    image_ratio: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of interventions on the image modality, for items "
        "that have key features in both.",
    )
    round: int = Field(1, ge=1, description="A new round is a fresh set of negatives (new seed).")
    per_user: bool = Field(
        False, description="Negatives per (user, train item) instead of per item (small data)."
    )
    controls: bool = Field(
        True,
        description="Also write as many control negatives per unit, each changing attributes "
        "that are not key features (kind `control`): the negatives of neggen compare's "
        "random_intervention control. Off halves the negatives' LLM requests and encoding.",
    )
    spare: int = Field(
        4,
        ge=0,
        description="Candidates per unit beyond per_item, each generated (a vLLM "
        "request) only where an earlier one is invalid or a near-copy.",
    )
    max_cosine: float | None = Field(
        None,
        gt=0,
        le=1,
        description="A negative at least this close to its positive (cosine of their modalities "
        "side by side as the models take them: text, visual description and attribute text, "
        "by embeddings.encoder) is rejected as a near-copy and replaced by a spare, e.g. 0.99; "
        "null (the default): no check, nothing encoded here. On Office 0.99 with "
        "embeddings.attribute_text leaves 95% of the items with per_item negatives (78% "
        "without the attribute text, 96% unchecked), but encodes every candidate.",
    )
    batch_size: int = Field(512, ge=1, description="Items (or pairs) per part file.")
    seed: int = Field(0, description="Base seed; each round derives its own.")


class EmbeddingsConfig(StrictModel):
    encoder: str = Field(
        "all-MiniLM-L6-v2",
        description="Sentence-transformers model: the bundled all-MiniLM-L6-v2, a hub name "
        "(needs hub access or the local cache) or a local folder.",
    )
    batch_size: int = Field(1024, ge=1, description="Texts per part file (and per resume step).")
    encode_batch_size: int = Field(32, ge=1, description="Texts per forward pass of the encoder.")
    encoder_backend: Literal["openvino", "torch"] = Field(
        "openvino",
        description="What runs the text encoder: OpenVINO (about 4x torch on a CPU, the model "
        "converted once into $NEGGEN_CACHE_DIR or ~/.cache/neggen), or torch; OpenVINO falls "
        "back to torch, with a logged reason, where it cannot run the model.",
    )
    vector_cache: bool = Field(
        True,
        description="Reuse the vectors of texts encoded by earlier embeddings versions of the "
        "dataset (<root>/<dataset>/vector-cache); not part of the version.",
    )
    device: str = Field(
        "auto",
        pattern=DEVICE_PATTERN,
        description="Where the text encoder runs: auto (CUDA where torch sees one, else the "
        "CPU), cpu, cuda or cuda:N; OpenVINO runs on the CPU, so on CUDA torch encodes. Not "
        "part of the version.",
    )
    image_features: bool = Field(True, description="Pillow colour/shape vectors for item images.")
    attribute_text: bool = Field(
        False,
        description="Encode each item's key attributes (name: value; ...) as a modality of its "
        "own, and each negative's with its changes: one changed value in a long text barely "
        "moves the text's vector. Also what the negatives' near-copy check measures: turn it on "
        "with negatives.max_cosine. Off by default: with both on, NegGen against its real_only "
        "control on Office was +2.2% Recall@20, not significant; and it adds a text to encode "
        "per item and per negative.",
    )
    near_duplicate_threshold: float = Field(
        0.97,
        gt=0,
        le=1,
        description="Cosine to a real item (other than its positive) at or above which a "
        "negative is flagged as a possible false negative.",
    )
    exact_index_max_items: int = Field(
        100_000, ge=0, description="Exact FAISS index up to this many items, HNSW past it."
    )
    hnsw_m: int = Field(32, ge=4, description="HNSW graph degree.")
    hnsw_ef_search: int = Field(128, ge=1, description="HNSW search breadth.")


class DnsConfig(StrictModel):
    pool: int = Field(
        32, ge=1, description="Uniform candidates; the highest-scored is the negative."
    )


class MixGcfConfig(StrictModel):
    pool: int = Field(32, ge=1, description="Uniform candidates mixed with the positive per hop.")
    hop_scoring: Literal["pooled", "per_hop"] = Field(
        "pooled",
        description="Which user embedding scores a hop's mixed candidates: pooled (the final "
        "one, as the official implementation) or per_hop (that hop's).",
    )


class AhnsConfig(StrictModel):
    pool: int = Field(32, ge=1, description="Uniform candidates to choose the negative from.")
    p: float = Field(-2.0, description="Hardness exponent: target = beta * (s_pos + alpha)^(p+1).")
    beta: float = Field(0.1, description="Hardness scale.")
    alpha: float = Field(1.0, description="Positive-score offset.")


class SamplersConfig(StrictModel):
    dns: DnsConfig = Field(default_factory=DnsConfig)
    mixgcf: MixGcfConfig = Field(default_factory=MixGcfConfig)
    ahns: AhnsConfig = Field(default_factory=AhnsConfig)


ModelName = Literal["mf", "lightgcn", "vbpr", "freedom", "neggen"]
BackboneName = Literal["mf", "lightgcn", "vbpr", "freedom"]
SamplerName = Literal["rns", "dns", "mixgcf", "ahns"]
MULTIMODAL_BACKBONES: tuple[BackboneName, ...] = ("vbpr", "freedom")  # read the modal features
NegGenAblation = Literal["none", "no_causal", "no_alignment", "real_only", "random_intervention"]


class FreedomConfig(StrictModel):
    """FREEDOM's settings (Zhou and Shen, ACM MM 2023), MMRec's defaults."""

    knn_k: int = Field(10, ge=1, description="Neighbours of an item in each modality's kNN graph.")
    image_weight: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Weight of the image graph in the item-item graph (MMRec's mm_image_weight); "
        "the text graph has the rest. Used only where items have image features.",
    )
    item_graph_layers: int = Field(
        1, ge=1, description="Propagations over the frozen item-item graph (n_mm_layers)."
    )
    layers: int = Field(
        2, ge=1, description="LightGCN propagations over the user-item graph (n_ui_layers)."
    )
    dropout: float = Field(
        0.8,
        ge=0,
        lt=1,
        description="Share of user-item edges pruned each epoch, sampled with probability "
        "proportional to 1/sqrt(d_u d_i) (degree-sensitive pruning); 0 keeps the whole graph.",
    )
    reg_weight: float = Field(
        0.0,
        ge=0,
        description="Weight of the BPR of the users' embeddings against the items' projected "
        "modal features (MMRec's reg_weight). FREEDOM has no L2 term: train.reg_weight is not "
        "used.",
    )


class NegGenSettings(StrictModel):
    effect_weight: float = Field(
        0.4, ge=0, description="lambda: weight of the key-feature effect in the score."
    )
    alignment_weight: float = Field(0.01, ge=0, description="alpha: weight of the alignment loss.")
    effect_max_norm: float = Field(
        1.0,
        gt=0,
        description="kappa: cap on the norm of an item's content k and of a "
        "key-feature effect c (the bound of the content term).",
    )
    temperature: float = Field(0.2, gt=0, description="tau: temperature of the alignment loss.")
    generated_weight: float = Field(
        1.0, ge=0, description="Weight of the BPR of positives against generated negatives."
    )
    ablation: NegGenAblation = Field(
        "none",
        description="none | no_causal (generated negatives as plain feature-space negatives) | "
        "no_alignment | real_only (content features, real negatives only) | "
        "random_intervention (the control negatives instead, which change attributes that are "
        "not key features; needs negatives.controls).",
    )
    skip_possible_false_negatives: bool = Field(
        True, description="Leave out negatives flagged as possible false negatives."
    )
    negative_choice: Literal["per_user", "uniform"] = Field(
        "per_user",
        description="Which of a positive's generated negatives a (user, positive) pair trains "
        "against: per_user (among those whose new values the user never chose for that "
        "attribute in the positive's category in train, the highest-scored; a uniform draw, "
        "counted, where none is) or uniform (a uniform draw, the control).",
    )
    virtual_node: bool = Field(
        False,
        description="FREEDOM only: a generated negative enters the frozen item-item graph as a "
        "virtual node (its own nearest real items, from its own vector) instead of taking its "
        "positive's place there.",
    )


class TrainConfig(StrictModel):
    model: ModelName = Field(
        "neggen", description="The recommender: mf, lightgcn, vbpr, freedom or neggen."
    )
    backbone: BackboneName = Field(
        "lightgcn", description="NegGen's backbone: mf, lightgcn, vbpr or freedom."
    )
    sampler: SamplerName = Field(
        "rns", description="Real-negative sampler: rns, dns, mixgcf, ahns."
    )
    embedding_size: int = Field(64, ge=1)
    n_layers: int = Field(1, ge=1, description="LightGCN propagation layers.")
    reg_weight: float = Field(
        1e-2, ge=0, description="L2 weight on the batch's ego embeddings (as MMRec)."
    )
    learning_rate: float = Field(1e-3, gt=0, description="Adam.")
    batch_size: int = Field(2048, ge=1)
    epochs: int = Field(1000, ge=1, description="At most this many epochs.")
    patience: int = Field(
        20, ge=1, description="Stop after this many epochs without a better valid Recall@20."
    )
    seed: int = Field(999)
    device: str = Field(
        "auto",
        pattern=DEVICE_PATTERN,
        description="Where the recommender trains and ranks: auto (CUDA where torch sees one, "
        "else the CPU), cpu, cuda or cuda:N. Not part of the version.",
    )
    samplers: SamplersConfig = Field(default_factory=SamplersConfig)
    freedom: FreedomConfig = Field(default_factory=FreedomConfig)
    neggen: NegGenSettings = Field(default_factory=NegGenSettings)

    @model_validator(mode="after")
    def _virtual_node_needs_freedom(self) -> TrainConfig:
        if self.neggen.virtual_node and self.backbone != "freedom":
            raise ValueError("train.neggen.virtual_node needs train.backbone freedom")
        return self

    @property
    def backbone_in_use(self) -> BackboneName:
        """The backbone trained: NegGen's, or the model itself."""
        return self.backbone if self.model == "neggen" else self.model


class EvaluateConfig(StrictModel):
    ks: tuple[int, ...] = Field((10, 20, 50), min_length=1, description="Cut-offs of the metrics.")
    batch_size: int = Field(4096, ge=1, description="Users scored per batch.")
    mask_valid_at_test: bool = Field(
        False,
        description="Also mask valid items when ranking for test (as Cornac; MMRec does not).",
    )
    top_k: int = Field(50, ge=1, description="Recommendations kept per test user.")

    @model_validator(mode="after")
    def _has_twenty(self) -> EvaluateConfig:
        if 20 not in self.ks:
            raise ValueError("evaluate.ks must include 20: early stopping watches valid Recall@20")
        return self


class ScheduleConfig(StrictModel):
    regenerate_cron: str = Field(
        "0 3 * * 1",
        pattern=r"^\S+( \S+){4}$",
        description="When the regenerate-negatives deployment runs (cron, five fields; "
        "default: Mondays 03:00).",
    )
    timezone: str = Field("UTC", description="Time zone of the cron schedule.")


class TaskRunnerConfig(StrictModel):
    kind: Literal["thread", "process", "dask", "ray"] = Field(
        "process",
        description="What runs the shards and a comparison's training runs: a thread or process "
        "pool on this machine, or a Dask or Ray cluster (`pip install 'neggen[dask]'` / "
        "`'neggen[ray]'`). Training holds the GIL for long stretches: threads do not run two "
        "trainings at once, processes do.",
    )
    max_workers: int = Field(
        2,
        ge=1,
        description="Threads or processes (thread, process), or the local cluster's worker "
        "processes (dask, ray without an address).",
    )
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="torch threads of each training run; none: the machine's cores over "
        "max_workers, so that the workers together use every core once.",
    )
    address: str | None = Field(
        None,
        description="A running cluster: a Dask scheduler (tcp://host:8786) or a Ray cluster "
        "(ray://host:10001, or auto); none: a local one for the flow run.",
    )

    @model_validator(mode="after")
    def _address_needs_a_cluster(self) -> TaskRunnerConfig:
        if self.address and self.kind in ("thread", "process"):
            raise ValueError("orchestration.task_runner.address needs kind dask or ray")
        return self


class OrchestrationConfig(StrictModel):
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    llm_concurrency_limit: str = Field(
        "neggen-llm",
        description="Prefect global concurrency limit each shard of an LLM stage holds a slot of "
        "while it talks to the vLLM server (create it with `prefect gcl create NAME --limit N`).",
    )
    shards: int = Field(
        256,
        ge=1,
        description="Most shards (Prefect tasks, each a run of whole batches) the attributes, "
        "negatives and embeddings stages are mapped over.",
    )
    task_runner: TaskRunnerConfig = Field(default_factory=TaskRunnerConfig)


def _default_methods() -> dict[str, tuple[str, ...]]:
    controls = ("neggen[real_only]", "neggen[random_intervention]")
    return {
        "lightgcn": (
            "rns",
            "dns",
            "mixgcf",
            "ahns",
            "neggen",
            "neggen[no_causal]",
            "neggen[no_alignment]",
            *controls,
        ),
        "mf": ("rns", "dns", "neggen", *controls),
    }


def _default_grid() -> dict[str, dict[str, tuple[Any, ...]]]:
    return {
        "neggen": {
            "train.neggen.effect_weight": (0.4, 1.0),
            "train.neggen.generated_weight": (0.25, 1.0),
        },
        "dns": {"train.samplers.dns.pool": (4, 8, 16, 32)},
        "mixgcf": {"train.samplers.mixgcf.pool": (4, 8, 16, 32)},
        "ahns": {"train.samplers.ahns.beta": (0.1, 1.0), "train.samplers.ahns.p": (-2.0, -1.0)},
        # a backbone's grid (MMRec's), searched with every baseline's on that backbone
        "freedom": {
            "train.freedom.dropout": (0.8, 0.9),
            "train.freedom.reg_weight": (0.0, 1e-5, 1e-4, 1e-3),
        },
        "vbpr": {"train.reg_weight": (2.0, 1.0, 0.1, 0.01, 1e-3, 1e-4, 1e-5)},
    }


class PeerResult(StrictModel):
    """A published or separately measured result shown beside ours (never computed here)."""

    name: str
    recall_20: float = Field(ge=0, le=1)
    ndcg_20: float = Field(ge=0, le=1)
    source: str = Field(description="Who measured it, and how.")


class CompareConfig(StrictModel):
    methods: dict[str, tuple[str, ...]] = Field(
        default_factory=_default_methods,
        description="Per backbone, the methods to compare: a sampler (rns, dns, mixgcf, ahns) "
        "or neggen, neggen[ablation].",
    )
    seeds: int = Field(3, ge=1, description="Seeds per method: train.seed, train.seed + 1, ...")
    budget: int = Field(
        4,
        ge=1,
        description="Search points per method, the same for every method: its whole grid when "
        "that has no more, else a seeded random sample of this many.",
    )
    grid: dict[str, dict[str, tuple[Any, ...]]] = Field(
        default_factory=_default_grid,
        description="Per method, config keys and their values (the grid of its search; "
        "neggen's also serves its ablations, each searched on its own), and per backbone the "
        "grid searched with every baseline on it (NegGen takes its baseline's choice); each "
        "point is trained with the first seed and the best on valid Recall@20 is kept.",
    )
    grid_backbones: tuple[str, ...] | None = Field(
        None,
        description="Backbones the grids are searched on (default: every one); a method on "
        "another backbone takes the values chosen on the first listed backbone that runs it.",
    )
    resamples: int = Field(
        10000, ge=100, description="Sign flips of the paired randomisation test."
    )
    examples: int = Field(4, ge=0, description="Generated negatives shown beside their positive.")
    peers: tuple[PeerResult, ...] = Field(
        (), description="Results measured elsewhere, shown beside ours and labelled as such."
    )


class NeggenConfig(StrictModel):
    """The whole pipeline's configuration."""

    artifacts: ArtifactsConfig = Field(default_factory=ArtifactsConfig)
    dataset: DatasetConfig = Field(default_factory=_demo_dataset)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    llm: LlmConfig = Field(default_factory=LlmConfig)
    attributes: AttributesConfig = Field(default_factory=AttributesConfig)
    negatives: NegativesConfig = Field(default_factory=NegativesConfig)
    embeddings: EmbeddingsConfig = Field(default_factory=EmbeddingsConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)


def _is_uri(path: str) -> bool:
    return "://" in path


def _resolve(path: str, base: Path) -> str:
    if _is_uri(path) or Path(path).is_absolute():
        return path
    return str((base / path).resolve())


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split `section.key=value` into its key path and YAML-parsed value."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. ingest.k_core=10")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc})") from exc
    return key.strip().split("."), value


def _apply_override(data: dict[str, Any], path: list[str], value: Any, item: str) -> None:
    node: Any = data
    model: type[BaseModel] | None = NeggenConfig
    for depth, part in enumerate(path):
        fields = model.model_fields if model is not None else {}
        if model is not None and part not in fields:
            where = ".".join(path[:depth]) or "the top level"
            raise ConfigError(
                f"--set {item}: unknown key {part!r} in {where} (known: {', '.join(fields)})"
            )
        annotation = fields[part].annotation if model is not None else None
        model = _submodel(annotation)
        if depth == len(path) - 1:
            node[part] = value
            return
        child = node.get(part)
        if not isinstance(child, dict):
            child = {} if child is None else dict(child)
            node[part] = child
        node = child


def _submodel(annotation: Any) -> type[BaseModel] | None:
    candidates = getattr(annotation, "__args__", (annotation,))
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _format_validation(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  - {key}: unknown key; remove it or check its spelling")
        else:
            lines.append(f"  - {key}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> NeggenConfig:
    """Load a YAML config (or the embedded demo defaults when `path` is None) plus overrides."""
    data: dict[str, Any] = NeggenConfig().model_dump(mode="json")
    source = "the default config"
    base = Path.cwd()
    if path is not None:
        file = Path(path)
        source = str(file)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read the config file ({exc.strerror})") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file}: expected a mapping of sections at the top level")
        data = copy.deepcopy(loaded)
        _resolve_dataset_paths(data, file.parent.resolve())

    for item in overrides:
        keys, value = parse_override(item)
        _apply_override(data, keys, value, item)
        is_input = (
            keys[0] == "dataset"
            and len(keys) == 2
            and keys[1] in ("interactions", "items", "image_root")
        )
        if is_input and isinstance(value, str):
            data["dataset"][keys[1]] = _resolve(value, base)
    if overrides:
        source = f"{source} with --set {' '.join(overrides)}"

    if isinstance(data.get("artifacts"), dict) and isinstance(data["artifacts"].get("root"), str):
        data["artifacts"]["root"] = _resolve(data["artifacts"]["root"], base)
    try:
        config = NeggenConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, source)) from exc
    if not _is_uri(config.artifacts.root) and not Path(config.artifacts.root).is_absolute():
        config = config.model_copy(
            update={"artifacts": ArtifactsConfig(root=_resolve(config.artifacts.root, base))}
        )
    return config


def _resolve_dataset_paths(data: dict[str, Any], base: Path) -> None:
    dataset = data.get("dataset")
    if not isinstance(dataset, dict):
        return
    for key in ("interactions", "items", "image_root"):
        value = dataset.get(key)
        if isinstance(value, str):
            dataset[key] = _resolve(value, base)


def with_settings(config: NeggenConfig, settings: dict[str, Any]) -> NeggenConfig:
    """`config` with `section.key` values replaced (validated as a whole, like `--set`)."""
    data = config.model_dump(mode="json")
    for key, value in settings.items():
        item = f"{key}={value}"
        _apply_override(data, key.split("."), value, item)
    try:
        return NeggenConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, f"settings {settings}")) from exc
