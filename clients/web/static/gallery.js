// The session gallery: lists the session's images (the executor's ListImages, through
// GET .../images: every image of the session, whoever stored it) and runs one generation at a time,
// reading its stages, states and previews from the NDJSON stream that POST .../generations answers
// with. The render is an execution on the server: leaving the page ends the stream, not the render.
"use strict";

const sessionId = decodeURIComponent(location.pathname.split("/").filter(Boolean)[1] || "");
const base = `/sessions/${encodeURIComponent(sessionId)}`;

// A preview shown in a figure until its image has loaded (then hidden, kept for what it was).
function previewImage(url) {
  const preview = document.createElement("img");
  preview.className = "preview";
  preview.alt = "a preview of the image being painted";
  if (url) preview.src = url;
  else preview.hidden = true;
  return preview;
}

function figure(image, previewUrl) {
  const fig = document.createElement("figure");
  fig.dataset.planId = image.plan_id;
  const frame = document.createElement("div");
  frame.className = "frame";
  const img = document.createElement("img");
  img.className = "image";
  img.alt = image.prompt;
  img.loading = "lazy";
  frame.append(img);
  if (previewUrl) {  // the preview stays in place until the image has loaded from proxy_url
    const preview = previewImage(previewUrl);
    frame.append(preview);
    img.addEventListener("load", () => { preview.hidden = true; }, { once: true });
  }
  img.src = image.proxy_url;
  const caption = document.createElement("figcaption");
  const prompt = document.createElement("p");
  prompt.className = "prompt";
  prompt.textContent = image.prompt;
  prompt.title = image.enhanced_prompt || image.prompt;  // the whole prompt the image was painted from
  const facts = document.createElement("dl");
  const cost = image.cost == null ? "—" : String(image.cost);  // dollars, as the server formats them
  for (const [name, value] of [["type", image.image_type], ["style", image.style],
                               ["provider", `${image.provider}${image.model ? " · " + image.model : ""}`],
                               ["cost", cost]]) {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value;
    dd.className = name;
    facts.append(dt, dd);
  }
  caption.append(prompt, facts);
  fig.append(frame, caption);
  return fig;
}

// The figure of the image being painted: its prompt, "painting…", and each preview as it comes.
function pendingFigure(prompt) {
  const fig = document.createElement("figure");
  fig.className = "pending";
  const frame = document.createElement("div");
  frame.className = "frame";
  const painting = document.createElement("p");
  painting.className = "painting";
  painting.textContent = "painting…";
  frame.append(painting, previewImage(""));
  const caption = document.createElement("figcaption");
  const text = document.createElement("p");
  text.className = "prompt";
  text.textContent = prompt;
  caption.append(text);
  fig.append(frame, caption);
  return fig;
}

// The executions being painted, by name ("executions/{id}"): their pending figures.
const painting = new Map();
// The executions this page started: their own stream draws them, not the session's events.
const own = new Set();

// The pending figure of an execution, made (first in the gallery) when it has none yet.
function pendingFor(name, prompt) {
  let pending = painting.get(name);
  if (!pending) {
    pending = pendingFigure(prompt);
    pending.dataset.execution = name;
    painting.set(name, pending);
    document.getElementById("gallery").prepend(pending);
    document.getElementById("empty").hidden = true;
  }
  return pending;
}

// How much of the render is done (progress_percent, 0 while unknown) on the pending figure,
// and with stages (this page's own execution) on its RENDERING stage too.
function showProgress(pending, update, stages) {
  if (!(update.progress_percent > 0)) return;
  pending.querySelector(".painting").textContent = `painting… ${update.progress_percent}%`;
  const rendering = stages ? document.querySelector('#stages li[data-stage="RENDERING"]') : null;
  if (rendering) {
    rendering.dataset.progress = String(update.progress_percent);
    rendering.textContent = `rendering ${update.progress_percent}%`;
  }
}

function showPreview(pending, preview) {
  const img = pending.querySelector("img.preview");
  img.src = preview.url;
  img.hidden = false;
  pending.querySelector(".painting").hidden = true;
}

// The image in its card, where its execution was painted (the preview kept until it loads).
function finish(name, image) {
  const gallery = document.getElementById("gallery");
  const pending = painting.get(name);
  painting.delete(name);
  const preview = pending?.querySelector("img.preview:not([hidden])")?.src || "";
  gallery.querySelector(`figure[data-plan-id="${image.plan_id}"]:not(.pending)`)?.remove();
  const done = figure(image, preview);
  if (pending) pending.replaceWith(done);
  else gallery.prepend(done);
  document.getElementById("empty").hidden = true;
}

function drop(name) {
  painting.get(name)?.remove();
  painting.delete(name);
}

function show(images) {
  const gallery = document.getElementById("gallery");
  gallery.replaceChildren(...painting.values(), ...images.map(figure));  // being painted: first
  document.getElementById("empty").hidden = images.length + painting.size > 0;
}

async function load() {
  const response = await fetch(`${base}/images`, { cache: "no-store" });
  if (response.ok) {
    show((await response.json()).images);
    return;
  }
  // The executor could not list: say so rather than show an empty session.
  const empty = document.getElementById("empty");
  const error = (await response.json().catch(() => ({}))).error;
  empty.textContent = `The images cannot be listed right now${error?.code ? ` (${error.code})` : ""}.`;
  empty.hidden = false;
}

function stage(name, state) {
  const stages = document.getElementById("stages");
  // One item a stage: several previews, the render's progress between them, or a state
  // change within a stage, add none.
  if ([...stages.children].some((item) => item.dataset.stage === name)) return;
  for (const item of stages.children) item.classList.add("done");
  const item = document.createElement("li");
  item.textContent = name.toLowerCase();
  item.dataset.stage = name;
  if (state) item.classList.add(state);
  stages.append(item);
}

// The execution's state in words: queued (and how many before it), running, succeeded...
function status(update) {
  const line = document.getElementById("status");
  if (!update.state) return;
  const ahead = update.state === "QUEUED" && update.queue_position > 0 ? ` (${update.queue_position} ahead)` : "";
  line.textContent = `${update.state.toLowerCase()}${ahead}`;
  line.dataset.state = update.state;
  line.hidden = false;
}

async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      if (line.trim()) yield JSON.parse(line);
    }
  }
}

async function generate(event) {
  event.preventDefault();
  const form = event.target;
  const button = document.getElementById("submit");
  const failure = document.getElementById("failure");
  const gallery = document.getElementById("gallery");
  const line = document.getElementById("status");
  document.getElementById("stages").replaceChildren();
  failure.hidden = true;
  line.hidden = true;
  button.disabled = true;
  let name = "";  // the execution, once started
  try {
    const response = await fetch(`${base}/generations`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ prompt: form.prompt.value, image_type: form.image_type.value }),
    });
    if (!response.ok) {
      stage("FAILED", "failed");
      failure.textContent = (await response.json()).error;
      failure.hidden = false;
      return;
    }
    for await (const update of events(response)) {
      if (update.stage === "FAILED") {
        stage("FAILED", "failed");
        if (name) drop(name);
        name = "";
        const { error, plan } = update;
        failure.textContent = `${update.failed} failed: ${error.code} ${error.reason}\n${error.message}` +
          (plan ? `\n\nThe plan:\n${JSON.stringify(plan, null, 2)}` : "");
        failure.hidden = false;
        return;
      }
      stage(update.stage, update.stage === "COMPLETED" ? "done" : "");
      status(update);
      if (update.stage === "COMPLETED") {
        finish(name, update.image);
        name = "";
      } else if (update.execution) {  // started: its place in the gallery (the session's events may have made it)
        name = update.execution;
        own.add(name);
        const pending = pendingFor(name, form.prompt.value);
        pending.querySelector(".prompt").textContent = form.prompt.value;
        if (update.stage === "PREVIEW") showPreview(pending, update.preview);
        showProgress(pending, update, true);
      }
    }
  } finally {
    // The stream ended without an end (the connection broke): the render may still finish.
    if (name && painting.has(name)) painting.get(name).querySelector(".painting").textContent = "still painting";
    button.disabled = false;
  }
}

// Every execution of the session, whoever started it (another player, the DM agent), as it
// changes: painted in place like this page's own. An EventSource reconnects by itself.
function follow() {
  const source = new EventSource(`${base}/events`);
  source.addEventListener("open", () => { document.body.dataset.live = "open"; });
  source.addEventListener("message", (message) => {
    const update = JSON.parse(message.data);
    document.body.dataset.heard = String(Number(document.body.dataset.heard || 0) + 1);
    if (update.error || own.has(update.execution)) return;
    if (update.image) finish(update.execution, update.image);
    else if (update.state === "FAILED" || update.state === "CANCELLED") drop(update.execution);
    else {
      const pending = pendingFor(update.execution, update.prompt);
      if (update.stage === "PREVIEW") showPreview(pending, update.preview);
      showProgress(pending, update, false);
    }
  });
}

document.getElementById("session-id").textContent = sessionId;
document.getElementById("generate").addEventListener("submit", generate);
load();
follow();
