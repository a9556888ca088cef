"""SearchPanel: document collections on the left (state, progress with ETA, New collection, Add
folder, Re-index, Files… (include/exclude globs), Delete, the files that could not be indexed), the
query box with a path filter and its hits on the right (searched as you type), and Ask: a grounded answer streamed under the hits, its [n]
markers links that open the cited passage. It draws ``SearchModel`` and ``AskModel``."""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Qt, QTimer, QUrl
from PySide6.QtWidgets import (
    QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QFrame, QHBoxLayout, QInputDialog, QLabel, QLineEdit,
    QMessageBox, QPushButton, QScrollArea, QSplitter, QVBoxLayout, QWidget,
)

from deepseek_desktop.notifier import Notifier
from deepseek_desktop.state.search import SearchModel, split_globs, suggest_name
from deepseek_desktop.state.search_ask import AskModel
from deepseek_desktop.widgets.citations import CitationsView, cited_number, link_citations
from deepseek_desktop.widgets.file_preview import open_location
from deepseek_desktop.widgets.labels import WrapLabel
from deepseek_desktop.widgets.markdown import MarkdownView
from deepseek_desktop.widgets.search_collections import CollectionList, ProblemsView
from deepseek_desktop.widgets.search_results import ResultsView, results_summary

RENDER_EVERY_MS = 50  # a streaming answer is redrawn at most this often, as in the Chat
GUIDE = ("Type to search {scope}: results come as you type. New collection… indexes a folder (Markdown, "
         "text, reStructuredText, HTML, PDF, source code) in the engine; you can search while it runs. "
         "Ask answers a question from the selected collection and cites its passages.")
STATUS_TEXT = {"stopped": "stopped", "interrupted": "interrupted", "error": "not answered"}


class SearchPanel(QWidget):
    def __init__(self, model: SearchModel, ask: AskModel, notifier: Notifier, theme: str = "dark", parent=None):
        super().__init__(parent)
        self.model, self.ask_model, self.notifier, self.theme = model, ask, notifier, theme
        self.previews: list[QWidget] = []  # open file previews (kept so they are not collected)
        self._answer_dirty = False
        self._select_when_listed: Optional[str] = None  # a collection just created: selected once listed
        self._render_timer = QTimer(self, interval=RENDER_EVERY_MS, timeout=self._render_answer)
        self._build()
        model.collections_changed.connect(self._on_collections)
        model.progress.connect(self.collections.show_progress)
        model.problems_ready.connect(self._on_problems)
        model.results_ready.connect(self._on_results)
        model.search_failed.connect(self._on_search_failed)
        model.refused.connect(self.show_refusal)
        model.available_changed.connect(lambda _: self._on_available())
        ask.answer_changed.connect(self._on_answer)
        ask.busy_changed.connect(self._on_ask_busy)
        self._on_collections(list(model.collections.values()))
        self._on_available()
        self._on_results(model.last_results or {"query": "", "hits": [], "mode": None})

    # ------------------------------------------------------------------ layout
    def _build(self) -> None:
        splitter = QSplitter()
        splitter.addWidget(self._build_collections())
        splitter.addWidget(self._build_search())
        splitter.setSizes([330, 900])
        splitter.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)

    def _build_collections(self) -> QWidget:
        side = QWidget()
        layout = QVBoxLayout(side)
        layout.setContentsMargins(0, 0, 0, 0)
        heading = QLabel("Collections")
        heading.setObjectName("cta_title")
        self.collections = CollectionList()
        self.collections.chosen.connect(self._on_chosen)
        self.new_button = QPushButton("New collection…")
        self.new_button.setObjectName("primary")
        self.new_button.setToolTip("Index a folder as a new collection")
        self.new_button.clicked.connect(self.new_collection)
        self.add_button = QPushButton("Add folder…")
        self.add_button.setToolTip("Add a folder to the selected collection and index it")
        self.add_button.clicked.connect(self.add_folder)
        self.reindex_button = QPushButton("Re-index")
        self.reindex_button.setToolTip("Index new and changed files, drop deleted ones")
        self.reindex_button.clicked.connect(lambda: self._with_selected(self.model.reindex))
        self.globs_button = QPushButton("Files…")
        self.globs_button.setToolTip("Which files of its folders the collection takes (include and exclude globs)")
        self.globs_button.clicked.connect(self.edit_globs)
        self.delete_button = QPushButton("Delete")
        self.delete_button.setToolTip("Delete the collection's index (the files stay)")
        self.delete_button.clicked.connect(self.delete_selected)
        first, second = QHBoxLayout(), QHBoxLayout()
        first.addWidget(self.new_button)
        first.addWidget(self.add_button)
        second.addWidget(self.reindex_button)
        second.addWidget(self.globs_button)
        second.addWidget(self.delete_button)
        self.message = WrapLabel()  # what the engine refused, word for word
        self.message.setObjectName("refusal")
        self.message.hide()
        self.problems_label = QLabel("Problems")
        self.problems_label.setObjectName("hint")
        self.problems = ProblemsView()
        self.problems_label.hide()
        self.problems.hide()
        layout.addWidget(heading)
        layout.addWidget(self.collections, 3)
        layout.addLayout(first)
        layout.addLayout(second)
        layout.addWidget(self.message)
        layout.addWidget(self.problems_label)
        layout.addWidget(self.problems, 2)
        return side

    def _build_search(self) -> QWidget:
        main = QWidget()
        layout = QVBoxLayout(main)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.query_box = QLineEdit(placeholderText="Search your documents — results come as you type",
                                   clearButtonEnabled=True)
        self.query_box.textChanged.connect(self.model.set_query)
        self.query_box.returnPressed.connect(self.model.search_now)
        self.ask_button = QPushButton("Ask")
        self.ask_button.setObjectName("primary")
        self.ask_button.setToolTip("Answer the question from the selected collection's passages, citing them")
        self.ask_button.clicked.connect(self.ask)
        self.stop_button = QPushButton("Stop", enabled=False)
        self.stop_button.clicked.connect(self.ask_model.stop)
        self.path_box = QLineEdit(placeholderText="Path filter, e.g. */manual/*.pdf", clearButtonEnabled=True)
        self.path_box.setToolTip("Only files whose full path matches (* any characters, ? one, [abc] one of)")
        self.path_box.textChanged.connect(self.model.set_path_glob)
        self.path_box.returnPressed.connect(self.model.search_now)
        row.addWidget(self.query_box, 3)
        row.addWidget(self.path_box, 1)
        row.addWidget(self.ask_button)
        row.addWidget(self.stop_button)
        self.banner = WrapLabel()  # why search cannot run here (no engine, an engine without it)
        self.banner.setObjectName("hint")
        self.summary = QLabel("")
        self.summary.setObjectName("hint")
        self.results = ResultsView(self.theme)
        self.results.open_requested.connect(self.open_source)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.results)
        split.addWidget(self._build_answer())
        split.setSizes([520, 320])
        layout.addLayout(row)
        layout.addWidget(self.banner)
        layout.addWidget(self.summary)
        layout.addWidget(split, 1)
        return main

    def _build_answer(self) -> QWidget:
        self.answer_frame = QFrame()
        self.answer_frame.setObjectName("card")
        layout = QVBoxLayout(self.answer_frame)
        self.answer_title = WrapLabel()
        self.answer_title.setObjectName("message_role")
        self.answer_status = QLabel()
        self.answer_status.setObjectName("message_status")
        self.answer_view = MarkdownView(self.theme)
        self.answer_view.html_filter = self._link_answer
        self.answer_view.link_clicked.connect(self._on_answer_link)
        self.citations = CitationsView(self.theme)
        self.citations.open_requested.connect(self.open_source)
        self.citations.hide()
        holder = QWidget()
        inner = QVBoxLayout(holder)
        inner.setContentsMargins(0, 0, 0, 0)
        inner.addWidget(self.answer_view)
        inner.addWidget(self.citations)
        inner.addStretch(1)
        scroll = QScrollArea(widgetResizable=True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(holder)
        layout.addWidget(self.answer_title)
        layout.addWidget(self.answer_status)
        layout.addWidget(scroll, 1)
        self.answer_frame.hide()
        return self.answer_frame

    # ------------------------------------------------------------------ hooks (tests replace them)
    def ask_folder(self) -> str:
        return QFileDialog.getExistingDirectory(self, "Folder of documents to index")

    def ask_name(self, suggested: str) -> Optional[str]:
        name, ok = QInputDialog.getText(self, "New collection", "Name (letters, digits, _ . -)", text=suggested)
        return name.strip() if ok else None

    def ask_globs(self, name: str, include: list[str], exclude: list[str]) -> Optional[tuple[list[str], list[str]]]:
        """The collection's new (include, exclude) globs, or None when the user cancels."""
        dialog = QDialog(self)
        dialog.setWindowTitle(f"Files of {name}")
        include_box = QLineEdit(", ".join(include), placeholderText="all supported files")
        exclude_box = QLineEdit(", ".join(exclude), placeholderText="none")
        form = QFormLayout(dialog)
        form.addRow(WrapLabel("Globs, separated by commas, match a file's path relative to its folder or its "
                              "name (e.g. docs/*.md, *.pdf). Re-indexing follows."))
        form.addRow("Include", include_box)
        form.addRow("Exclude", exclude_box)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(dialog.accept)
        buttons.rejected.connect(dialog.reject)
        form.addRow(buttons)
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return None
        return split_globs(include_box.text()), split_globs(exclude_box.text())

    def confirm(self, title: str, question: str) -> bool:
        return QMessageBox.question(self, title, question) == QMessageBox.StandardButton.Yes

    # ------------------------------------------------------------------ collections
    def new_collection(self) -> None:
        folder = self.ask_folder()
        if not folder:
            return
        name = self.ask_name(suggest_name(folder))
        if name is not None:
            self.create_collection(name, [folder])

    def create_collection(self, name: str, folders: list[str]) -> None:
        self.show_refusal("")
        self._select_when_listed = name
        self.model.create(name, folders)

    def add_folder(self) -> None:
        name = self.collections.current_name()
        if name is None:  # "All collections": a folder of its own
            self.new_collection()
            return
        folder = self.ask_folder()
        if folder:
            self.show_refusal("")
            self.model.add_folder(name, folder)

    def edit_globs(self) -> None:
        name = self.collections.current_name()
        if name is None:
            self.notifier.warning("select a collection first")
            return
        collection = self.model.collections.get(name, {})
        chosen = self.ask_globs(name, collection.get("include") or [], collection.get("exclude") or [])
        if chosen is not None:
            self.show_refusal("")
            self.model.set_globs(name, *chosen)

    def delete_selected(self) -> None:
        name = self.collections.current_name()
        if name and self.confirm("Delete collection", f"Delete the index of {name}? The files themselves stay."):
            self.model.delete(name)

    def _with_selected(self, action) -> None:
        name = self.collections.current_name()
        if name is None:
            self.notifier.warning("select a collection first")
            return
        self.show_refusal("")
        action(name)

    def show_refusal(self, message: str) -> None:
        self.message.setText(message)
        self.message.setVisible(bool(message))

    def _on_collections(self, collections: list) -> None:
        self.collections.set_collections(collections, {c["name"]: self.model.eta(c["name"]) for c in collections})
        wanted = self._select_when_listed
        if wanted and wanted in self.model.collections:
            self._select_when_listed = None
            self.collections.select(wanted)
        elif self.collections.currentRow() < 0:
            self.collections.select(self.model.scope)
        self._update_buttons()
        name = self.collections.current_name()
        if name and self.model.collections.get(name, {}).get("problems"):
            self.model.fetch_problems(name)
        elif name:
            self._on_problems(name, [])

    def _on_chosen(self, name: Optional[str]) -> None:
        self.model.set_scope(name)
        if not self.model.query.strip():
            self._on_results({"query": "", "hits": [], "mode": None})
        self._update_buttons()
        self._on_problems(name or "", [])
        if name and self.model.collections.get(name, {}).get("problems"):
            self.model.fetch_problems(name)

    def _on_problems(self, name: str, files: list) -> None:
        if name != (self.collections.current_name() or ""):
            return
        self.problems.show_files(files)
        self.problems_label.setText(f"Problems in {name}: {len(files)} file{'s' if len(files) != 1 else ''} "
                                    "not indexed")
        self.problems_label.setVisible(bool(files))
        self.problems.setVisible(bool(files))

    def _update_buttons(self) -> None:
        selected = self.collections.current_name() is not None
        available = self.model.available
        self.new_button.setEnabled(available)
        self.add_button.setEnabled(available)
        self.reindex_button.setEnabled(available and selected)
        self.globs_button.setEnabled(available and selected)
        self.delete_button.setEnabled(available and selected)

    def _on_available(self) -> None:
        self.banner.setText("" if self.model.available else f"Document search is not available: {self.model.reason}")
        self.banner.setVisible(not self.model.available)
        self._update_buttons()

    # ------------------------------------------------------------------ results
    def _on_results(self, results: dict) -> None:
        self.summary.setText(results_summary(results))
        self.results.show_results(results, "no passage matches" if results.get("query", "").strip() else self._guide())

    def _guide(self) -> str:
        scope = self.model.scope
        return GUIDE.format(scope=f"the collection {scope}" if scope else "every collection")

    def _on_search_failed(self, message: str) -> None:
        self.summary.setText(f"search: {message}")

    def open_source(self, source: dict) -> None:
        preview = open_location(source, self.notifier, self)
        if preview is not None:
            self.previews = [p for p in self.previews if p.isVisible()] + [preview]

    # ------------------------------------------------------------------ Ask
    def ask(self) -> None:
        self.ask_model.ask(self.query_box.text(), self.collections.current_name())

    def _on_ask_busy(self, busy: bool) -> None:
        self.stop_button.setEnabled(busy)
        self.ask_button.setEnabled(not busy)

    def _on_answer(self, answer: dict) -> None:
        self._answer_dirty = True
        if answer.get("status") != "streaming":
            self._render_answer()
        elif not self._render_timer.isActive():
            self._render_timer.start()

    def _render_answer(self) -> None:
        answer = self.ask_model.answer
        if not self._answer_dirty or answer is None:
            self._render_timer.stop()
            return
        self._answer_dirty = False
        self.answer_frame.show()
        self.answer_title.setText(f"{answer['question']} — from {answer['collection']}")
        status = STATUS_TEXT.get(answer["status"], "")
        self.answer_status.setText(f"{status}: {answer['error']}" if status and answer.get("error") else status)
        self.answer_status.setVisible(bool(status))
        content = answer["content"] or ("…" if answer["status"] == "streaming" else "")
        if self.answer_view.markdown != content:
            self.answer_view.set_markdown(content)
        if (self.citations.sources, self.citations.unknown) != (answer["citations"], answer["unknown_citations"]):
            self.citations.set_sources(answer["citations"], answer["unknown_citations"])

    def _link_answer(self, rendered: str) -> str:
        answer = self.ask_model.answer or {}
        return link_citations(rendered, [c.get("n") for c in answer.get("citations") or []], self.theme)

    def _on_answer_link(self, url: QUrl) -> None:
        n = cited_number(url)
        if n is not None:
            self.citations.show_passage(n)

    def set_theme(self, theme: str) -> None:
        """Colours of the highlights, links and code drawn from now on; what is shown is redrawn."""
        self.theme = self.results.theme = theme
        for view in (self.answer_view, self.citations):
            view.renderer.theme = theme
        if self.model.last_results is not None:
            self._on_results(self.model.last_results)
        self.citations.set_sources(self.citations.sources, self.citations.unknown)
        if self.ask_model.answer is not None:
            self.answer_view.markdown = None  # drawn again, links in the new colours
            self._answer_dirty = True
            self._render_answer()

    def shutdown(self) -> None:
        self.ask_model.stop()
        for preview in self.previews:
            preview.close()
