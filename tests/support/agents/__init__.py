"""Deterministic agents and chat models, logged from code (MLflow's models-from-code) by the
streaming tests: no weights, each answer a function of its input. Each streams the words of
the last user message back, a chunk a word; what a test needs of one call goes in its options
(a ResponsesAgent's ``custom_inputs``, a chat model's ``custom_inputs`` or params, a pyfunc's
input dict):

- ``repeat``: the words that many times over (a long stream);
- ``delay``: seconds before each chunk;
- ``fail_at``: raise ``ValueError`` before the chunk of that index (an error mid-stream);
- ``stall``: seconds to sleep before the second chunk (the idle timeout);
- ``closed_file``: a path the generator writes when it ends (a bare name: in its TMPDIR, which
  is a sandboxed worker's scratch folder): ``cancelled <n>`` when closed early after n chunks
  (GeneratorExit), ``finished <n>`` when it ran to its end.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
RESPONSES_AGENT = HERE / "responses_agent.py"
CHAT_MODEL = HERE / "chat_model.py"
CHAT_AGENT = HERE / "chat_agent.py"
STREAM_PYFUNC = HERE / "stream_pyfunc.py"
PLAIN_PYFUNC = HERE / "plain_pyfunc.py"
COUNTED_CHAT = HERE / "counted_chat.py"  # reports its tokens in usage (issue 53's token quotas)
# The registry the streaming tests share: model name -> its code.
MODELS = {
    "agent": RESPONSES_AGENT,
    "chat": CHAT_MODEL,
    "chat-agent": CHAT_AGENT,
    "words": STREAM_PYFUNC,
    "plain": PLAIN_PYFUNC,
}
WORDS = HERE / "words.py"


def log_model_from_code(name: str, code: Path, **kwargs: object) -> int:
    """Log ``code`` as a model from code (with the shared ``words.py`` beside it) and register it
    as ``name``; its version number. Call inside ``Registry.log``."""
    import sys

    import mlflow

    # MLflow runs the code once at log time, before code_paths are anywhere on the path; at load
    # time they are (its code/ folder).
    sys.path.insert(0, str(HERE))
    # Named, not inferred: MLflow infers requirements by loading the model in a subprocess of
    # its own, seconds of CPU per model logged (and these need nothing but MLflow).
    kwargs.setdefault("pip_requirements", ["mlflow"])
    with mlflow.start_run(run_name=name):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            code_paths=[str(WORDS)],
            registered_model_name=name,
            **kwargs,  # type: ignore[arg-type]
        )
    sys.path.remove(str(HERE))
    return int(info.registered_model_version or 0)


def save_model_from_code(path: Path, code: Path) -> Path:
    """Save ``code`` as a model from code at ``path`` (no registry): for runtime tests."""
    import sys

    import mlflow

    sys.path.insert(0, str(HERE))
    try:
        mlflow.pyfunc.save_model(
            str(path), python_model=str(code), code_paths=[str(WORDS)], pip_requirements=["mlflow"]
        )
    finally:
        sys.path.remove(str(HERE))
    return path


TINY_GENERATOR = HERE / "tiny_generator.py"
TINY_WORDS = "the a quick brown fox jumps over lazy dog cat runs far".split()


def tiny_transformer(path: Path) -> Path:
    """A GPT-2 of two small layers from a config, random weights under a fixed seed, and a word
    tokenizer over :data:`TINY_WORDS`, saved at ``path`` as transformers saves them."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {word: index for index, word in enumerate(["[UNK]", *TINY_WORDS])}
    words = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]").save_pretrained(str(path))
    torch.manual_seed(44)
    config = GPT2Config(vocab_size=len(vocab), n_positions=64, n_embd=32, n_layer=2, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(str(path))
    return path
