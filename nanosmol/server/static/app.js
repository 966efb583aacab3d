// nanosmol's web chat: streams answers from /v1/chat/completions, keeps conversations in
// localStorage. Model output reaches the page only as text (textContent) or as the HTML that
// the server's Markdown renderer made with raw HTML disabled (/render).
"use strict";

const STORE = "nanosmol.conversations", KEY_STORE = "nanosmol.apiKey", SETTINGS_STORE = "nanosmol.settings";
const $ = (id) => document.getElementById(id);
const SETTINGS = ["system", "temperature", "top_p", "max_tokens", "thinking"];

let conversations = JSON.parse(localStorage.getItem(STORE) || "[]");
let current = null; // the conversation shown
let controller = null; // aborts the answer being streamed

// -- storage -------------------------------------------------------------------------------
function save() { localStorage.setItem(STORE, JSON.stringify(conversations)); }
function newConversation() {
  const c = { id: String(Date.now()) + Math.random().toString(16).slice(2, 6), title: "New chat", messages: [] };
  conversations.unshift(c);
  return c;
}

// -- the server ----------------------------------------------------------------------------
function headers() {
  const h = { "Content-Type": "application/json" };
  const key = localStorage.getItem(KEY_STORE);
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

async function api(path, body, signal) {
  for (let attempt = 0; ; attempt++) {
    const response = await fetch(path, { method: body ? "POST" : "GET", headers: headers(), signal,
                                         body: body ? JSON.stringify(body) : undefined });
    if (response.status !== 401 || attempt > 0) return response;
    const key = window.prompt("This server needs an API key:");  // asked once, then remembered
    if (!key) return response;
    localStorage.setItem(KEY_STORE, key.trim());
  }
}

async function renderMarkdown(text) {
  const response = await api("/render", { text });
  if (!response.ok) throw new Error("render failed: " + response.status);
  return (await response.json()).html;
}

async function showMarkdown(element, text) {
  try {
    const html = await renderMarkdown(text);
    element.classList.remove("streaming");
    element.innerHTML = html;  // escaped by the server: raw HTML is off in its renderer
  } catch (e) {
    element.textContent = text;
  }
}

// -- drawing -------------------------------------------------------------------------------
function messageElement(message) {
  const box = document.createElement("div");
  box.className = "message " + message.role;
  const role = document.createElement("div");
  role.className = "role";
  role.textContent = message.role === "user" ? "You" : "Assistant";
  box.append(role);
  if (message.role === "assistant") {
    const thinking = document.createElement("details");
    thinking.className = "thinking";
    thinking.hidden = !message.reasoning;
    const summary = document.createElement("summary");
    summary.textContent = "Thinking";
    const thought = document.createElement("div");
    thought.textContent = message.reasoning || "";
    thinking.append(summary, thought);
    box.append(thinking);
  }
  const content = document.createElement("div");
  content.className = "content";
  content.textContent = message.content;
  box.append(content);
  if (message.note) box.append(noteElement(message.note));
  return box;
}

function noteElement(text) {
  const note = document.createElement("div");
  note.className = "note";
  note.textContent = text;
  return note;
}

function drawConversationList() {
  const list = $("conversations");
  list.replaceChildren();
  for (const c of conversations) {
    const item = document.createElement("li");
    item.classList.toggle("active", c === current);
    const open = document.createElement("button");
    open.className = "open";
    open.type = "button";
    open.textContent = c.title;
    open.onclick = () => { if (!controller) select(c); };
    const remove = document.createElement("button");
    remove.className = "delete";
    remove.type = "button";
    remove.title = "Delete";
    remove.textContent = "×";
    remove.onclick = () => {
      if (controller) return;
      conversations = conversations.filter((other) => other !== c);
      save();
      select(conversations[0] || null);
    };
    item.append(open, remove);
    list.append(item);
  }
}

function select(conversation) {
  current = conversation;
  const box = $("messages");
  box.replaceChildren();
  for (const message of current ? current.messages : []) {
    const element = messageElement(message);
    box.append(element);
    if (message.role === "assistant" && message.content) showMarkdown(element.querySelector(".content"), message.content);
  }
  box.scrollTop = box.scrollHeight;
  drawConversationList();
}

// -- settings ------------------------------------------------------------------------------
function loadSettings() {
  const saved = JSON.parse(localStorage.getItem(SETTINGS_STORE) || "{}");
  for (const name of SETTINGS) {
    if (saved[name] !== undefined) $(name).value = saved[name];
    $(name).onchange = () => {
      const now = JSON.parse(localStorage.getItem(SETTINGS_STORE) || "{}");
      now[name] = $(name).value;
      localStorage.setItem(SETTINGS_STORE, JSON.stringify(now));
    };
  }
}

function requestBody(messages) {
  const system = $("system").value.trim();
  const body = {
    messages: (system ? [{ role: "system", content: system }] : []).concat(
      messages.map((m) => ({ role: m.role, content: m.content }))),
    stream: true,
    stream_options: { include_usage: true },
    temperature: Number($("temperature").value),
    top_p: Number($("top_p").value),
    max_tokens: Number($("max_tokens").value),
  };
  const thinking = $("thinking").value;
  if (thinking) body.chat_template_kwargs = { enable_thinking: thinking === "on" };
  return body;
}

// -- sending and streaming -----------------------------------------------------------------
async function send(text) {
  if (!current) { current = newConversation(); }
  if (current.messages.length === 0) current.title = text.slice(0, 40);
  current.messages.push({ role: "user", content: text });
  const answer = { role: "assistant", content: "", reasoning: "" };
  const body = requestBody(current.messages);
  current.messages.push(answer);
  conversations = [current].concat(conversations.filter((c) => c !== current));  // the latest on top
  save();
  select(current);

  const element = $("messages").lastElementChild;
  const content = element.querySelector(".content");
  const thinking = element.querySelector(".thinking");
  content.classList.add("streaming");
  controller = new AbortController();
  setBusy(true);
  let lastRender = 0;
  try {
    const response = await api("/v1/chat/completions", body, controller.signal);
    if (!response.ok) {
      const error = await response.json().catch(() => ({}));
      throw new Error((error.error && error.error.message) || "HTTP " + response.status);
    }
    for await (const event of events(response)) {
      if (event.error) throw new Error(event.error.message);
      const delta = (event.choices && event.choices[0] && event.choices[0].delta) || {};
      if (delta.reasoning_content) {
        answer.reasoning += delta.reasoning_content;
        thinking.hidden = false;
        thinking.lastElementChild.textContent = answer.reasoning;
      }
      if (delta.content) {
        answer.content += delta.content;
        content.textContent = answer.content;  // text while it streams; Markdown now and then
        if (Date.now() - lastRender > 400) { lastRender = Date.now(); showMarkdownLater(content, answer); }
      }
      if (event.usage) answer.usage = event.usage;
      $("messages").scrollTop = $("messages").scrollHeight;
    }
  } catch (e) {
    answer.note = e.name === "AbortError" ? "(stopped)" : "error: " + e.message;
    element.append(noteElement(answer.note));
  } finally {
    controller = null;
    setBusy(false);
    save();
    content.classList.remove("streaming");
    if (answer.content) await showMarkdown(content, answer.content);
  }
}

function showMarkdownLater(element, answer) {
  const snapshot = answer.content;
  renderMarkdown(snapshot).then((html) => {
    if (answer.content === snapshot) { element.classList.remove("streaming"); element.innerHTML = html; }
  }).catch(() => {});
}

// The server-sent events of a response: one parsed JSON object per `data:` line.
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

function setBusy(busy) {
  $("send").hidden = busy;
  $("stop").hidden = !busy;
  $("prompt").disabled = busy;
}

// -- wiring --------------------------------------------------------------------------------
$("composer").onsubmit = (event) => {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || controller) return;
  $("prompt").value = "";
  send(text);
};
$("prompt").onkeydown = (event) => {
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("composer").requestSubmit(); }
};
$("stop").onclick = () => { if (controller) controller.abort(); };
$("new-chat").onclick = () => { if (!controller) { current = null; select(null); $("prompt").focus(); } };

loadSettings();
select(conversations[0] || null);
api("/v1/models").then((r) => r.ok ? r.json() : null).then((models) => {
  if (models && models.data.length) $("model-name").textContent = "Model: " + models.data[0].id;
}).catch(() => {});
