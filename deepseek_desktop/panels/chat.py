"""ChatPanel: conversations on the left (``ConversationList``), the conversation on the right
(``MessageView``), a composer below, and per-conversation settings: sampling, documents, and the
reply format and tools (``ReplyFormatForm``). It draws ``ChatSession`` and wires its children's
signals to it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QComboBox, QDoubleSpinBox, QFormLayout, QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QSpinBox,
    QSplitter, QToolButton, QVBoxLayout, QWidget,
)

from deepseek_desktop.state.chat import ChatSession, conversation_settings
from deepseek_desktop.state.chat_tools import SettingsProblem
from deepseek_desktop.state.engine_session import EngineSession, load_percent, progress_text
from deepseek_desktop.widgets.conversation_list import ConversationList
from deepseek_desktop.widgets.labels import ElidedLabel
from deepseek_desktop.widgets.message_view import MessageView
from deepseek_desktop.widgets.reply_format import ReplyFormatForm

if TYPE_CHECKING:
    from deepseek_desktop.state.library import ModelLibrary

# A 93 MB download (a 4-bit GGUF) saved as float32 safetensors: exact de-quantised weights, 538 MB.
DEMO_FETCH_TEXT = "Fetch the demo model (93 MB download, 540 MB on disk)"
DEMO_LOAD_TEXT = "Load the demo model (fetched already)"
MODELS_OWN = "the model's own"
NO_DOCUMENTS = "No documents"


def chosen(box: QDoubleSpinBox) -> Optional[float]:
    """The box's value, or None at its lowest: the model's own setting."""
    return None if box.value() <= box.minimum() else round(box.value(), 2)

class Composer(QPlainTextEdit):
    """Enter sends, Shift+Enter starts a new line, Escape cancels an edit."""

    submitted = Signal()
    cancelled = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and not event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self.submitted.emit()
            return
        if event.key() == Qt.Key.Key_Escape:
            self.cancelled.emit()
            return
        super().keyPressEvent(event)


class ChatPanel(QWidget):
    wants_models_panel = Signal()
    wants_demo = Signal()

    def __init__(self, session: ChatSession, notifier, theme: str = "dark", parent=None):
        super().__init__(parent)
        self.session = session
        self.notifier = notifier
        self.theme = theme
        self.edit_position: Optional[int] = None
        self._collections: list[str] = []   # offered in "Use documents"
        self._previews: list[QWidget] = []  # file previews opened from a citation
        self._build()
        session.conversations_changed.connect(self._fill_conversations)
        session.messages_reset.connect(self._reset_messages)
        session.message_added.connect(self._add_message)
        session.message_updated.connect(self.message_view.mark_dirty)
        session.busy_changed.connect(self._on_busy)
        self.set_model_ready(False)
        session.refresh()

    @property
    def widgets(self) -> dict:
        """The drawn messages by id (``MessageView.widgets``)."""
        return self.message_view.widgets

    # -- layout
    def _build(self) -> None:
        splitter = QSplitter()
        self.conversations = ConversationList()
        self.conversations.new_requested.connect(lambda: self.session.new_conversation())
        self.conversations.query_changed.connect(lambda text: self.session.refresh(text))
        self.conversations.open_requested.connect(self.session.open)
        self.conversations.rename_requested.connect(self.rename)
        self.conversations.delete_requested.connect(self.session.delete)
        self.conversation_list = self.conversations.list
        splitter.addWidget(self.conversations)

        main = QWidget()
        layout = QVBoxLayout(main)
        layout.setContentsMargins(0, 0, 0, 0)
        header = QHBoxLayout()
        self.title_label = ElidedLabel("New chat")
        self.title_label.setObjectName("chat_title")
        self.settings_button = QToolButton(text="Settings", checkable=True)
        self.settings_button.toggled.connect(lambda on: self.settings_frame.setVisible(on))
        # The reply's format (a JSON schema) and the tools it may call, per conversation.
        self.format_button = QToolButton(text="Format && tools", checkable=True)  # "&&": one & shown, not a shortcut mark
        self.format_button.toggled.connect(lambda on: self.reply_format.setVisible(on))
        # Grounding in a document collection, per conversation (the search extension; issue 13).
        self.documents_box = QComboBox()
        self.documents_box.setToolTip("Use documents: answers draw on a collection's passages and cite them")
        self.documents_box.addItem(NO_DOCUMENTS, None)
        self.documents_box.activated.connect(lambda _i: self.choose_documents(self.documents_box.currentData()))
        header.addWidget(self.title_label, 1)
        header.addWidget(self.documents_box)
        header.addWidget(self.format_button)
        header.addWidget(self.settings_button)
        layout.addLayout(header)
        layout.addWidget(self._build_settings())
        self.reply_format = ReplyFormatForm()
        self.reply_format.apply_requested.connect(lambda: self.apply_reply_format(announce=True))
        self.reply_format.hide()
        layout.addWidget(self.reply_format)
        layout.addWidget(self._build_call_to_action())

        self.message_view = MessageView(self.theme)
        self.message_view.edit_requested.connect(self.begin_edit)
        self.message_view.regenerate_requested.connect(self.regenerate)
        self.message_view.code_copied.connect(lambda: self.notifier.info("code block copied"))
        self.message_view.open_requested.connect(self.open_source)
        self.message_view.tool_result_submitted.connect(self.session.submit_tool_result)
        self.message_view.rendered.connect(self._update_actions)
        self.scroll = self.message_view  # the scroll area, as before the split
        layout.addWidget(self.message_view, 1)

        self.edit_banner = QLabel("Editing a message: sending replaces it and every message after it (Esc cancels)")
        self.edit_banner.setObjectName("edit_banner")
        self.edit_banner.hide()
        layout.addWidget(self.edit_banner)
        row = QHBoxLayout()
        self.composer = Composer(placeholderText="Message the model — Enter sends, Shift+Enter for a new line")
        self.composer.setFixedHeight(72)
        self.composer.submitted.connect(self.send)
        self.composer.cancelled.connect(self.cancel_edit)
        self.send_button = QPushButton("Send")
        self.send_button.setObjectName("primary")
        self.send_button.clicked.connect(self.send)
        self.stop_button = QPushButton("Stop", enabled=False)
        self.stop_button.clicked.connect(self.session.stop)
        buttons = QVBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        row.addWidget(self.composer, 1)
        row.addLayout(buttons)
        layout.addLayout(row)
        splitter.addWidget(main)
        splitter.setSizes([260, 900])
        outer = QVBoxLayout(self)
        outer.addWidget(splitter)

    def _build_settings(self) -> QFrame:
        self.settings_frame = QFrame()
        self.settings_frame.setObjectName("card")
        form = QFormLayout(self.settings_frame)
        self.system_prompt = QPlainTextEdit(placeholderText="System prompt (optional)")
        self.system_prompt.setFixedHeight(60)
        # The lowest value of each box stands for "the model's own setting" (not sent).
        self.temperature = QDoubleSpinBox(minimum=-0.1, maximum=2.0, singleStep=0.1, specialValueText=MODELS_OWN)
        self.top_p = QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.05, specialValueText=MODELS_OWN)
        for box in (self.temperature, self.top_p):
            box.setToolTip("The model's own setting (its generation_config.json) unless you choose one")
        self.max_tokens = QSpinBox(minimum=0, maximum=131072, singleStep=64, specialValueText="as the context allows")
        apply = QPushButton("Apply to this conversation")
        apply.clicked.connect(self._apply_settings)
        form.addRow("System prompt", self.system_prompt)
        form.addRow("Temperature", self.temperature)
        form.addRow("Top-p", self.top_p)
        form.addRow("Max tokens", self.max_tokens)
        form.addRow(apply)
        self.settings_frame.hide()
        return self.settings_frame

    def _build_call_to_action(self) -> QFrame:
        self.cta = QFrame()
        self.cta.setObjectName("card")
        layout = QVBoxLayout(self.cta)
        title = QLabel("No model is loaded")
        title.setObjectName("cta_title")
        text = QLabel("Fetch the small demo model to try the app at once, or pick a model of your own.")
        text.setWordWrap(True)
        row = QHBoxLayout()
        self.demo_button = QPushButton(DEMO_FETCH_TEXT)
        self.demo_button.setObjectName("primary")
        self.demo_button.clicked.connect(self.wants_demo.emit)
        self.choose_button = QPushButton("Choose a model…")
        self.choose_button.clicked.connect(self.wants_models_panel.emit)
        row.addWidget(self.demo_button)
        row.addWidget(self.choose_button)
        row.addStretch(1)
        self.cta_status = ElidedLabel(elide=Qt.TextElideMode.ElideMiddle)  # a fetch step can name a deep folder
        for widget in (title, text):
            layout.addWidget(widget)
        layout.addLayout(row)
        layout.addWidget(self.cta_status)
        return self.cta

    # -- what the engine session and the library say
    def follow(self, engine: EngineSession, library: ModelLibrary) -> None:
        """Show whether a model is served, a load's progress, and the demo fetch's steps (its
        button is here) in the call to action; from now, and as it is now."""
        engine.model_changed.connect(lambda model_id, hint: self.set_model_ready(model_id is not None, hint))
        engine.load_progress.connect(self.show_load_progress)
        library.job_progress.connect(lambda line, _percent: self.cta_status.setText(line))
        library.job_finished.connect(lambda _ok, message, _path: (self.cta_status.setText(message),
                                                                  self._name_demo_button()))
        self.set_model_ready(engine.model_id is not None, engine.model_hint())

    def follow_documents(self, search) -> None:
        """Offer ``search``'s collections (``state.search.SearchModel``) in "Use documents"."""
        def listed(collections: list) -> None:
            self._collections = [c["name"] for c in collections]
            self._fill_documents()
        search.collections_changed.connect(listed)
        listed(list(search.collections.values()))

    def choose_documents(self, collection: Optional[str]) -> None:
        """Ground this conversation in ``collection`` (None: in nothing); a first choice starts one."""
        self.session.use_documents(collection)
        self._fill_documents()
        self.reply_format.set_documents(collection)

    def apply_reply_format(self, announce: bool = False) -> bool:
        """Keep the form's schema and tools with this conversation, once they check out; what is
        wrong is shown in the form, which keeps the text as typed. False when nothing was kept."""
        try:
            self.session.configure_structured(*self.reply_format.read())
        except SettingsProblem as exc:
            self.reply_format.show_problem(str(exc))
            self.reply_format.show()
            self.format_button.setChecked(True)
            self.notifier.error(f"chat: {exc}")
            return False
        # A first setting starts a conversation, whose opening redrew the form: show what is kept.
        self.reply_format.show_settings(self.session.current["settings"])
        self.format_button.setText(self.reply_format.summary())
        if announce:
            self.notifier.info("reply format and tools saved for this conversation")
        return True

    def _fill_documents(self) -> None:
        chosen = self.session.documents
        names = self._collections
        box = self.documents_box
        box.blockSignals(True)
        box.clear()
        box.addItem(NO_DOCUMENTS, None)
        for name in names:
            box.addItem(f"Documents: {name}", name)
        if chosen and chosen not in names:  # deleted, or not listed yet: still what this conversation uses
            box.addItem(f"Documents: {chosen} (not found)", chosen)
        box.setCurrentIndex(max(0, box.findData(chosen)) if chosen else 0)
        box.blockSignals(False)

    def _name_demo_button(self) -> None:
        """Say what the button will do: fetch the demo model, or load the copy already here."""
        from engine.paths import demo_model_dir, is_model_folder

        here = is_model_folder(demo_model_dir())  # two stat calls
        self.demo_button.setText(DEMO_LOAD_TEXT if here else DEMO_FETCH_TEXT)

    def set_theme(self, theme: str) -> None:
        """For code blocks drawn from now on (a drawn one keeps its colours, as before)."""
        self.theme = theme
        self.message_view.set_theme(theme)

    def show_load_progress(self, event: dict) -> None:
        self.cta_status.setText(f"Loading {load_percent(event):.0f}% — {progress_text(event)}")

    def set_model_ready(self, ready: bool, detail: str = "") -> None:
        if not ready:
            self._name_demo_button()
        self.cta.setVisible(not ready)
        self.cta_status.setText(detail)
        self.send_button.setEnabled(ready and not self.session.busy)

    # -- conversations
    def _fill_conversations(self, conversations: list) -> None:
        self.conversations.fill(conversations, self.session.current["id"] if self.session.current else None)

    def rename(self, conversation_id: str, title: str) -> None:
        self.session.rename(conversation_id, title)
        if self.session.current and self.session.current["id"] == conversation_id:
            self.title_label.setText(self.session.current["title"])

    def _apply_settings(self) -> None:
        self.session.configure(self.system_prompt.toPlainText(), {
            "temperature": chosen(self.temperature), "top_p": chosen(self.top_p), "max_tokens": self.max_tokens.value()})
        self.notifier.info("conversation settings saved")

    # -- messages
    def _reset_messages(self, messages: list) -> None:
        conversation = self.session.current or {}
        self.title_label.setText(conversation.get("title", "New chat"))
        settings = conversation_settings(conversation.get("settings"))
        self.system_prompt.setPlainText(conversation.get("system_prompt", ""))
        for box, key in ((self.temperature, "temperature"), (self.top_p, "top_p")):
            box.setValue(box.minimum() if settings[key] is None else settings[key])
        self.max_tokens.setValue(int(settings["max_tokens"]))
        self._fill_documents()
        self.reply_format.set_documents(settings.get("documents"))
        self.reply_format.show_settings(settings)
        self.format_button.setText(self.reply_format.summary())
        self.message_view.reset(messages)
        self._update_actions()

    def _add_message(self, message: dict, scroll: bool = True) -> None:
        self.message_view.add(message, scroll)
        if self.session.current:
            self.title_label.setText(self.session.current["title"])
        self._update_actions()

    def _update_actions(self) -> None:
        """Regenerate on the last reply, Edit while idle, result boxes on the calls still waiting."""
        messages = self.session.messages
        calling = self.session.last_reply()
        pending = {calling["id"]: [c["id"] for c in self.session.pending_calls(calling)]} if calling else {}
        self.message_view.set_actions(messages[-1]["id"] if messages else None, self.session.busy, pending)

    def _on_busy(self, busy: bool) -> None:
        self.stop_button.setEnabled(busy)
        self.send_button.setEnabled(not busy and not self.cta.isVisible())
        self._update_actions()

    # -- actions
    def open_source(self, source: dict) -> None:
        """A cited source, opened at its page or line (see widgets.file_preview)."""
        from deepseek_desktop.widgets.file_preview import open_location

        preview = open_location(source, self.notifier, self)
        if preview is not None:
            self._previews = [p for p in self._previews if p.isVisible()] + [preview]

    def send(self) -> None:
        # A schema or tools edited but not applied are checked (and kept) first: a bad one stops
        # the message, which stays in the composer.
        if self.reply_format.changed and not self.apply_reply_format():
            return
        if self.session.send(self.composer.toPlainText(), self.edit_position):
            self.composer.clear()
            self.cancel_edit()

    def regenerate(self) -> None:
        self.session.regenerate()

    def begin_edit(self, message: dict) -> None:
        self.edit_position = message["position"]
        self.composer.setPlainText(message["content"])
        self.edit_banner.show()
        self.composer.setFocus()

    def cancel_edit(self) -> None:
        if self.edit_position is not None:
            self.edit_position = None
            self.edit_banner.hide()
