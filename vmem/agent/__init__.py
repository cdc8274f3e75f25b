"""The agent's memory semantics: MemGPT-style memory functions, the reducer's rules for model replies, the chat step loop, the agent's own tools, slots, permissions and grants.

May import: paging, models, assembly, retrieval, state, schemas, errors.
"""
