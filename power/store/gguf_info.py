"""What a GGUF header says (``GGUFInfo``, read by ``power.store.gguf``), and the names Ollama
shows for its numbers: tensor types, quantization levels, parameter counts.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

__all__ = [
    "TOKENS_KEY",
    "GGUFArray",
    "GGUFInfo",
    "TensorInfo",
    "file_type_name",
    "human_number",
    "tensor_type_name",
]

TOKENS_KEY = "tokenizer.ggml.tokens"

_TENSOR_TYPES = (
    "F32 F16 Q4_0 Q4_1 Q4_2 Q4_3 Q5_0 Q5_1 Q8_0 Q8_1 Q2_K Q3_K Q4_K Q5_K Q6_K Q8_K IQ2_XXS IQ2_XS "
    "IQ3_XXS IQ1_S IQ4_NL IQ3_S IQ2_S IQ4_XS I8 I16 I32 I64 F64 IQ1_M BF16 Q4_0_4_4 Q4_0_4_8 "
    "Q4_0_8_8 TQ1_0 TQ2_0 IQ4_NL_4_4 IQ4_NL_4_8 IQ4_NL_8_8 MXFP4"
).split()

# llama_ftype values (general.file_type) -> Ollama's quantization level names.
_FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 4: "MXFP4", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
    22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
    28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
    38: "MXFP4",
}  # fmt: skip


def tensor_type_name(type_id: int) -> str:
    return _TENSOR_TYPES[type_id] if 0 <= type_id < len(_TENSOR_TYPES) else "unknown"


def file_type_name(file_type: int | None) -> str:
    """``general.file_type`` -> quantization level name (``"unknown"`` when unrecognised)."""
    return _FILE_TYPES.get(file_type, "unknown") if file_type is not None else "unknown"


def human_number(n: int) -> str:
    """Ollama's ``format.HumanNumber``: 134515008 -> "134.52M", 1_235_814_400 -> "1.2B"."""
    if n >= 1_000_000_000:
        value = n / 1_000_000_000
        return f"{value:.0f}B" if value == math.floor(value) else f"{value:.1f}B"
    if n >= 1_000_000:
        value = n / 1_000_000
        return f"{value:.0f}M" if value == math.floor(value) else f"{value:.2f}M"
    if n >= 1_000:
        return f"{n / 1_000:.0f}K"
    return str(n)


class TensorInfo(msgspec.Struct, frozen=True):
    name: str
    type: str
    shape: list[int]

    @property
    def parameters(self) -> int:
        return math.prod(self.shape)


class GGUFArray(msgspec.Struct, frozen=True):
    """An array longer than ``MAX_ARRAY`` (or past the file's budget of kept elements): only
    its element type (a GGUF value type) and its length were read."""

    type: int
    count: int

    def __len__(self) -> int:
        return self.count


class GGUFInfo(msgspec.Struct, frozen=True):
    """A parsed header: ``metadata`` (key -> value; arrays as lists, or as ``GGUFArray`` when
    too long to keep) and the tensor table."""

    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo]
    # token id -> token, for the ids the gateway reads (bos, eos) when the token list was too
    # long to keep
    special_tokens: dict[int, str] = {}

    def _arch_key(self, suffix: str) -> Any:
        return self.metadata.get(f"{self.architecture}.{suffix}")

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) and arch else "unknown"

    @property
    def parameter_count(self) -> int:
        return sum(t.parameters for t in self.tensors)

    @property
    def parameter_size(self) -> str:
        return human_number(self.parameter_count)

    @property
    def file_type(self) -> str:
        ft = self.metadata.get("general.file_type")
        return file_type_name(ft if isinstance(ft, int) else None)

    @property
    def context_length(self) -> int | None:
        value = self._arch_key("context_length")
        return value if isinstance(value, int) else None

    @property
    def embedding_length(self) -> int | None:
        value = self._arch_key("embedding_length")
        return value if isinstance(value, int) else None

    @property
    def pooling_type(self) -> int | None:
        value = self._arch_key("pooling_type")
        return value if isinstance(value, int) else None

    @property
    def has_pooling_type(self) -> bool:
        return f"{self.architecture}.pooling_type" in self.metadata

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) and value else None

    @property
    def vocab_size(self) -> int | None:
        """The length of the token list, kept or not; else ``<arch>.vocab_size``."""
        tokens = self.metadata.get(TOKENS_KEY)
        if isinstance(tokens, list | GGUFArray):
            return len(tokens)
        value = self._arch_key("vocab_size")
        return value if isinstance(value, int) else None

    def _token(self, id_key: str) -> str | None:
        token_id, tokens = self.metadata.get(id_key), self.metadata.get(TOKENS_KEY)
        if not isinstance(token_id, int):
            return None
        if not isinstance(tokens, list):
            return self.special_tokens.get(token_id)
        token = tokens[token_id] if 0 <= token_id < len(tokens) else None
        return token if isinstance(token, str) else None

    @property
    def bos_token(self) -> str | None:
        return self._token("tokenizer.ggml.bos_token_id")

    @property
    def eos_token(self) -> str | None:
        return self._token("tokenizer.ggml.eos_token_id")
