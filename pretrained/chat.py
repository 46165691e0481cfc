"""`pretrained chat MODEL`: a conversation with a chat model in the terminal.

A `ChatSession` keeps the conversation (an optional system prompt, then the user and assistant turns), renders
all of it with the checkpoint's chat template for each reply, and streams the reply as `generate()` writes it.
`repl` reads the user's lines: `/reset` forgets the turns, `/exit` (or the end of input) quits, and Ctrl-C
stops the reply being written without ending the session; the part already written stays in the history, as
the user saw it.

A reply ends at the model's end-of-sequence ids (generation_config.json) or at the tokenizer's eos token, which
chat templates write to close a turn. When the conversation outgrows the model's positions, the oldest turns
are dropped, with a note.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading

import torch

from .generation import TextStreamer, check_settings, cli_options, end_of_turn_ids, resolve_generation_config

DEFAULT_MAX_NEW_TOKENS = 256
# Below this many free positions for the reply, the oldest turns make room (when there are any).
MIN_REPLY_ROOM = 32
HELP = "Type a message. /reset forgets the conversation, /exit (or Ctrl-D) quits, Ctrl-C stops a reply."


class ChatSession:
    """A conversation with a causal language model through its chat template.

    Args:
        model: a model with `generate()` (e.g. from `AutoModelForCausalLM.from_pretrained`).
        tokenizer: its tokenizer, with a chat template.
        system: the system prompt, kept at the start of every rendering (None: the template's default).
        options: generate() keyword arguments (max_new_tokens, do_sample, temperature, top_k, top_p,
            repetition_penalty, no_repeat_ngram_size, ...).
        out: where replies are streamed (default sys.stdout).

    Raises:
        ValueError: the tokenizer has no chat template, or a decoding option generate() refuses.
    """

    def __init__(self, model, tokenizer, system: str | None = None, options: dict | None = None, out=None):
        if tokenizer.chat_template is None:
            raise ValueError(f"the tokenizer of {tokenizer.name_or_path or 'this model'} has no chat template, so "
                             f"it cannot hold a conversation; use `pretrained run MODEL TEXT` to continue a text")
        self.model, self.tokenizer, self.system, self.out = model, tokenizer, system, out
        self.options = dict(options or {})
        if self.options.get("num_beams", 1) != 1:
            raise ValueError("chat streams its replies, which beam search cannot do: leave out --num-beams")
        self.options.setdefault("eos_token_id", end_of_turn_ids(model.generation_config.eos_token_id, tokenizer))
        self.options.setdefault("max_new_tokens", model.generation_config.max_new_tokens or DEFAULT_MAX_NEW_TOKENS)
        check_settings(resolve_generation_config(model.generation_config, None, self.options)[0],
                       model.config.vocab_size)
        self.max_positions = getattr(model.config, "max_position_embeddings", None)
        self.turns: list[dict] = []

    @property
    def messages(self) -> list[dict]:
        """The conversation so far: the system prompt, then the turns."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.turns

    def reset(self) -> None:
        """Forget the turns (the system prompt stays)."""
        self.turns = []

    def prompt_ids(self, messages: list[dict]) -> torch.Tensor:
        """(1, T) ids of `messages` rendered with the chat template, ending with the assistant's header."""
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                  return_dict=False)

    def send(self, text: str) -> tuple[str, bool]:
        """Add the user's `text`, stream the reply, and keep both in the conversation.

        Returns:
            The reply, and whether Ctrl-C stopped it early.

        Raises:
            ValueError: the message alone does not fit the model's positions.
            ChatTemplateError: the template refuses the conversation (e.g. roles that do not alternate).
        """
        turn = {"role": "user", "content": text}
        ids, max_new_tokens = self._fit(turn)
        streamer = _ReplyStreamer(self.tokenizer, file=self.out)
        stopped = False
        with _ctrl_c_stops(streamer):
            try:
                self.model.generate(ids, streamer=streamer, **{**self.options, "max_new_tokens": max_new_tokens})
            except KeyboardInterrupt:
                stopped = True
                streamer.end()
        self.turns += [turn, {"role": "assistant", "content": streamer.text}]
        return streamer.text, stopped

    def _fit(self, turn: dict) -> tuple[torch.Tensor, int]:
        """The prompt ids with `turn`, after dropping the oldest turns if the reply would have too little room,
        and how many tokens the reply may have."""
        wanted = self.options["max_new_tokens"]
        while True:
            ids = self.prompt_ids(self.messages + [turn])
            if self.max_positions is None:
                return ids, wanted
            room = self.max_positions - ids.shape[1]
            if room >= min(wanted, MIN_REPLY_ROOM) or len(self.turns) < 2:
                break
            self.turns = self.turns[2:]  # a user turn and its reply, so that roles still alternate
            self._note(f"(the oldest turn was dropped to fit the model's {self.max_positions} positions)")
        if room < 1:
            raise ValueError(f"the conversation needs {ids.shape[1]} tokens, and the model has "
                             f"{self.max_positions} positions: write a shorter message (or /reset)")
        return ids, min(wanted, room)

    def _note(self, text: str) -> None:
        print(text, file=self.out if self.out is not None else sys.stdout, flush=True)


class _ReplyStreamer(TextStreamer):
    """A TextStreamer that also keeps the reply's text, whole or cut short, and that stops generate() at the
    next token once `stop_requested` is set (by Ctrl-C)."""

    def __init__(self, tokenizer, file=None):
        super().__init__(tokenizer, skip_prompt=True, file=file)
        self.text = ""
        self.stop_requested = False

    def put(self, token_ids) -> None:
        if self.stop_requested:  # here, between two tokens, the printed text and the ids agree
            raise KeyboardInterrupt
        super().put(token_ids)

    def end(self) -> None:
        self.text = self.tokenizer.decode(self._ids, skip_special_tokens=True)
        super().end()


@contextlib.contextmanager
def _ctrl_c_stops(streamer: _ReplyStreamer):
    """While a reply is generated, Ctrl-C asks the streamer to stop at the next token, instead of raising
    KeyboardInterrupt wherever Python happens to be (half-way through printing a piece of text, say). A second
    Ctrl-C raises at once. Outside the main thread (where signals cannot be handled) Ctrl-C keeps its default."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_ctrl_c(signum, frame):
        if streamer.stop_requested:
            raise KeyboardInterrupt
        streamer.stop_requested = True

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def repl(session: ChatSession, read=input, out=None) -> None:
    """Read messages and print replies until /exit or the end of input."""
    out = out if out is not None else sys.stdout
    while True:
        try:
            line = read(">>> ")
        except EOFError:
            print(file=out)
            return
        except KeyboardInterrupt:
            print(f"\n{HELP}", file=out)
            continue
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit", "/bye"):
            return
        if text == "/reset":
            session.reset()
            print("(conversation forgotten)", file=out)
            continue
        if text in ("/help", "/?"):
            print(HELP, file=out)
            continue
        _, stopped = session.send(text)
        if stopped:
            print("(stopped)", file=out, flush=True)


def main(model_name: str, folder: str, args) -> None:
    """`pretrained chat MODEL`: load the checkpoint in `folder` and talk to it on the terminal."""
    from .auto import AutoModelForCausalLM
    from .tokenization import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.chat_template is None:
        raise ValueError(f"{model_name} has no chat template (no chat_template.jinja, no \"chat_template\" in "
                         f"tokenizer_config.json); use `pretrained run {model_name} TEXT` to continue a text")
    model = AutoModelForCausalLM.from_pretrained(folder)
    if getattr(args, "seed", None) is not None:
        torch.manual_seed(args.seed)
    session = ChatSession(model, tokenizer, system=args.system, options=cli_options(args))
    print(f"model: {model_name} ({type(model).__name__}, {model.num_parameters() / 1e6:.1f}M parameters)")
    print(HELP)
    with torch.inference_mode():
        repl(session)
