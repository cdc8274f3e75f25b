"""vmem: a virtual-memory runtime for LLM context.

The public surface is re-exported here (and pinned by tests/test_packaging.py);
everything else lives in subpackages whose names say what they hold (README,
"Design") and may move.
"""

from vmem.agent.chat import ChatResult, StepOutcome
from vmem.agent.tools import AgentTool, calculator_tool
from vmem.assembly.profiles import ModelProfile, get_profile, profile_for_budget
from vmem.assembly.tokens import Tokenizer, get_tokenizer
from vmem.assembly.trace_diff import TraceDiff
from vmem.bus.bus import Bus, Msg, Subscription
from vmem.client.client import Client, IngestResult
from vmem.client.sample import handbook as sample_handbook
from vmem.client.turns import AskResult
from vmem.errors import (
    AccessDenied,
    ActorError,
    BudgetError,
    BusError,
    ConcurrencyConflict,
    CorruptRecord,
    EmbedderMismatch,
    HomeError,
    InputError,
    InvalidNamespace,
    LogError,
    ModelError,
    NoResponders,
    RequestTimeout,
    SchemaError,
    UnknownBlock,
    UnknownNamespace,
    UnknownTurn,
    UsageError,
    VmemError,
)
from vmem.models.anthropic import AnthropicModel
from vmem.models.config import model_from_env
from vmem.models.model import Model, ModelReply, ToolSpec
from vmem.models.offline import OfflineModel
from vmem.models.openai import OpenAIChatModel
from vmem.models.openai_embeddings import OpenAIEmbedder
from vmem.retrieval.choice import default_embedder
from vmem.retrieval.embed import Embedder, HashingEmbedder
from vmem.retrieval.fusion import FusionPolicy
from vmem.retrieval.minilm import MiniLMEmbedder
from vmem.retrieval.retrievers import RetrievalContext, RetrievalQuery, Retriever
from vmem.schemas.events import Event
from vmem.schemas.messages import (
    EvictReply,
    FaultReply,
    PackReply,
    PinReply,
    ReduceReply,
    ReplayReport,
    SearchReply,
    Slot,
    Snapshot,
    StateReply,
    StoredEvent,
)
from vmem.service.vmem import Vmem, connect
from vmem.state.fold import State, fold, state_hash
from vmem.state.namespace import validate_namespace

__all__ = [
    "AccessDenied",
    "ActorError",
    "AgentTool",
    "AnthropicModel",
    "AskResult",
    "BudgetError",
    "Bus",
    "BusError",
    "ChatResult",
    "Client",
    "ConcurrencyConflict",
    "CorruptRecord",
    "Embedder",
    "EmbedderMismatch",
    "Event",
    "EvictReply",
    "FaultReply",
    "FusionPolicy",
    "HashingEmbedder",
    "HomeError",
    "IngestResult",
    "InputError",
    "InvalidNamespace",
    "LogError",
    "MiniLMEmbedder",
    "Model",
    "ModelError",
    "ModelProfile",
    "ModelReply",
    "Msg",
    "NoResponders",
    "OfflineModel",
    "OpenAIChatModel",
    "OpenAIEmbedder",
    "PackReply",
    "PinReply",
    "ReduceReply",
    "ReplayReport",
    "RequestTimeout",
    "RetrievalContext",
    "RetrievalQuery",
    "Retriever",
    "SchemaError",
    "SearchReply",
    "Slot",
    "Snapshot",
    "State",
    "StateReply",
    "StepOutcome",
    "StoredEvent",
    "Subscription",
    "Tokenizer",
    "ToolSpec",
    "TraceDiff",
    "UnknownBlock",
    "UnknownNamespace",
    "UnknownTurn",
    "UsageError",
    "Vmem",
    "VmemError",
    "calculator_tool",
    "connect",
    "default_embedder",
    "fold",
    "get_profile",
    "get_tokenizer",
    "model_from_env",
    "profile_for_budget",
    "sample_handbook",
    "state_hash",
    "validate_namespace",
]
__version__ = "0.1.0"
