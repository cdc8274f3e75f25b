"""vmem: a virtual-memory runtime for LLM context.

The public surface is re-exported here; everything else lives in private
modules and may move.  See README.md for a tour.
"""

from vmem._agent import AgentTool, calculator_tool
from vmem._chat import ChatResult, StepOutcome
from vmem._client import AskResult, Client, IngestResult
from vmem._embed import Embedder, HashingEmbedder
from vmem._embed_http import OpenAIEmbedder
from vmem._embed_minilm import MiniLMEmbedder
from vmem._fusion import FusionPolicy
from vmem._model_anthropic import AnthropicModel
from vmem._model_config import model_from_env
from vmem._model_openai import OpenAIChatModel
from vmem._retrieve import RetrievalContext, RetrievalQuery, Retriever
from vmem._trace import TraceDiff
from vmem._bus import Bus, Msg, Subscription
from vmem._bus_local import LocalBus
from vmem._bus_nats import NatsBus
from vmem._log_jetstream import JetStreamLog
from vmem._demo import handbook as sample_handbook
from vmem._home import Home
from vmem._log import AppendResult, Log
from vmem._log_lmdb import LmdbLog
from vmem._model import Model, ModelReply, ToolSpec
from vmem._namespace import validate_namespace
from vmem._offline_model import OfflineModel
from vmem._profile import ModelProfile, get_profile, profile_for_budget
from vmem._state import State, fold, state_hash
from vmem._tokens import Tokenizer, get_tokenizer
from vmem._vmem import Vmem, connect
from vmem.schemas.events import Event
from vmem.schemas.messages import (
    EvictReply,
    FaultReply,
    PackReply,
    PinReply,
    ReduceReply,
    ReplayReport,
    Slot,
    Snapshot,
    StateReply,
    StoredEvent,
)
from vmem.errors import (
    AccessDenied,
    ActorError,
    BudgetError,
    BusError,
    ConcurrencyConflict,
    CorruptRecord,
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

__all__ = [
    "AccessDenied",
    "Client",
    "Event",
    "EvictReply",
    "FaultReply",
    "PackReply",
    "PinReply",
    "ReduceReply",
    "StateReply",
    "JetStreamLog",
    "NatsBus",
    "connect",
    "ActorError",
    "AgentTool",
    "AnthropicModel",
    "ChatResult",
    "Embedder",
    "FusionPolicy",
    "HashingEmbedder",
    "MiniLMEmbedder",
    "OpenAIChatModel",
    "OpenAIEmbedder",
    "RetrievalContext",
    "RetrievalQuery",
    "Retriever",
    "Slot",
    "Snapshot",
    "StepOutcome",
    "ToolSpec",
    "TraceDiff",
    "calculator_tool",
    "model_from_env",
    "AppendResult",
    "AskResult",
    "BudgetError",
    "Bus",
    "BusError",
    "ConcurrencyConflict",
    "CorruptRecord",
    "Home",
    "HomeError",
    "IngestResult",
    "InputError",
    "InvalidNamespace",
    "LmdbLog",
    "LocalBus",
    "Log",
    "LogError",
    "Model",
    "ModelError",
    "ModelProfile",
    "ModelReply",
    "Msg",
    "NoResponders",
    "OfflineModel",
    "ReplayReport",
    "RequestTimeout",
    "SchemaError",
    "State",
    "StoredEvent",
    "Subscription",
    "Tokenizer",
    "UnknownBlock",
    "UnknownNamespace",
    "UnknownTurn",
    "UsageError",
    "Vmem",
    "VmemError",
    "get_profile",
    "get_tokenizer",
    "profile_for_budget",
    "sample_handbook",
    "state_hash",
    "fold",
    "validate_namespace",
]
__version__ = "0.1.0"
