"""AskModel: one grounded question from the Search panel, without widgets.

It sends the question as a chat completion with the ``search`` extension, so the engine finds
the passages, numbers them as sources and streams an answer that cites them; the sources come
first (``citations`` on the stream's first chunk), then the text, then the numbers the answer
used that name no source (``unknown_citations``). The panel draws ``answer`` whenever
``answer_changed`` fires.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

from PySide6.QtCore import QObject, Signal

from deepseek_desktop.notifier import Notifier

if TYPE_CHECKING:
    from deepseek_desktop.client import EngineClient, StreamHandle

ASK_TOP_K = 5


def new_answer(question: str, collection: Optional[str]) -> dict:
    return {"question": question, "collection": collection, "content": "", "reasoning": "", "citations": [],
            "unknown_citations": [], "status": "streaming", "error": None}


class AskModel(QObject):
    answer_changed = Signal(object)  # the answer dict (the same object as it grows)
    busy_changed = Signal(bool)

    def __init__(self, client: Callable[[], Optional[EngineClient]], model_id: Callable[[], Optional[str]],
                 notifier: Notifier, parent: Optional[QObject] = None):
        super().__init__(parent)
        self._client, self._model_id, self.notifier = client, model_id, notifier
        self.answer: Optional[dict] = None
        self.max_tokens: Optional[int] = None  # None: not sent, the answer ends where the model ends it
        self.handle: Optional[StreamHandle] = None

    @property
    def busy(self) -> bool:
        return self.handle is not None

    def ask(self, question: str, collection: Optional[str]) -> bool:
        """Stream a grounded answer to ``question`` from ``collection``; False (nothing sent)
        without a question, a collection or a loaded model, or while an answer still streams."""
        question = question.strip()
        client, model = self._client(), self._model_id()
        why = ("type a question first" if not question else
               "choose a collection to ask about" if not collection else
               "no model is loaded: load one in the Models panel first" if client is None or not model else
               "an answer is still streaming; stop it first" if self.busy else "")
        if why:
            self.notifier.warning(why)
            return False
        answer = self.answer = new_answer(question, collection)
        body = {"model": model, "messages": [{"role": "user", "content": question}],
                "search": {"collection": collection, "top_k": ASK_TOP_K, "mode": "hybrid"}}
        if self.max_tokens:
            body["max_tokens"] = self.max_tokens
        self.handle = client.chat_stream(body, lambda piece: self._on_piece(answer, piece),
                                         lambda result: self._on_done(answer, result),
                                         lambda message: self._on_failed(answer, message))
        self.busy_changed.emit(True)
        self.answer_changed.emit(answer)
        return True

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.stop()

    def _on_piece(self, answer: dict, piece: tuple) -> None:
        if answer is not self.answer:
            return
        kind, value = piece
        if kind == "citations":
            answer["citations"] = value
        else:
            answer["reasoning" if kind == "reasoning" else "content"] += value
        self.answer_changed.emit(answer)

    def _on_done(self, answer: dict, result: dict) -> None:
        if answer is not self.answer:
            return
        answer["unknown_citations"] = result.get("unknown_citations") or []
        answer["status"] = ("stopped" if result.get("stopped") else
                            "interrupted" if result.get("interrupted") else "done")
        answer["error"] = result.get("interrupted")
        self._end(answer)

    def _on_failed(self, answer: dict, message: str) -> None:
        if answer is not self.answer:
            return
        answer["status"], answer["error"] = "error", message
        self.notifier.error(f"Ask: {message}")
        self._end(answer)

    def _end(self, answer: dict) -> None:
        self.handle = None
        self.busy_changed.emit(False)
        self.answer_changed.emit(answer)
