// The session gallery: lists the session's images (the executor's ListImages, through
// GET .../images: every image of the session, whoever stored it) and runs one generation at a time,
// reading its stages from the NDJSON stream that POST .../generations answers with.
"use strict";

const sessionId = decodeURIComponent(location.pathname.split("/").filter(Boolean)[1] || "");
const base = `/sessions/${encodeURIComponent(sessionId)}`;

function figure(image) {
  const fig = document.createElement("figure");
  fig.dataset.planId = image.plan_id;
  const img = document.createElement("img");
  img.src = image.proxy_url;
  img.alt = image.prompt;
  img.loading = "lazy";
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
  fig.append(img, caption);
  return fig;
}

function show(images) {
  const gallery = document.getElementById("gallery");
  gallery.replaceChildren(...images.map(figure));
  document.getElementById("empty").hidden = images.length > 0;
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
  for (const item of stages.children) item.classList.add("done");
  const item = document.createElement("li");
  item.textContent = name.toLowerCase();
  item.dataset.stage = name;
  if (state) item.classList.add(state);
  stages.append(item);
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
  document.getElementById("stages").replaceChildren();
  failure.hidden = true;
  button.disabled = true;
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
        const { error, plan } = update;
        failure.textContent = `${update.failed} failed: ${error.code} ${error.reason}\n${error.message}` +
          (plan ? `\n\nThe plan:\n${JSON.stringify(plan, null, 2)}` : "");
        failure.hidden = false;
        return;
      }
      stage(update.stage, update.stage === "COMPLETED" ? "done" : "");
      if (update.stage === "COMPLETED") {
        const gallery = document.getElementById("gallery");
        gallery.querySelector(`figure[data-plan-id="${update.image.plan_id}"]`)?.remove();
        gallery.prepend(figure(update.image));
        document.getElementById("empty").hidden = true;
      }
    }
  } finally {
    button.disabled = false;
  }
}

document.getElementById("session-id").textContent = sessionId;
document.getElementById("generate").addEventListener("submit", generate);
load();
