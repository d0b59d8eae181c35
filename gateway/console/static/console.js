// Prefit console: the playground's render and send, and the stats page's refresh. No libraries.
"use strict";

(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]');
  const token = csrf ? csrf.getAttribute("content") : "";

  function text(el, value) { el.textContent = value; }

  function metaRow(list, name, value) {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    text(dt, name);
    text(dd, value);
    list.append(dt, dd);
  }

  function answerOf(body) {
    try {
      const choice = body.choices[0];
      const content = choice.message.content;
      return typeof content === "string" ? content : JSON.stringify(content, null, 2);
    } catch (e) {
      return null;
    }
  }

  function setupPlayground(form) {
    const options = JSON.parse(document.getElementById("policy-options").textContent);
    const policy = document.getElementById("pg-policy");
    const variant = document.getElementById("pg-variant");
    const status = document.getElementById("pg-status");
    const buttons = form.querySelectorAll("button");

    function fillVariants() {
      variant.replaceChildren(new Option("by weight", ""));
      for (const name of options[policy.value] || []) variant.append(new Option(name, name));
    }
    policy.addEventListener("change", fillVariants);
    fillVariants();

    async function run(action) {
      const payload = {
        policy: policy.value,
        variant: variant.value,
        message: document.getElementById("pg-message").value,
        system: document.getElementById("pg-system").value,
      };
      if (!payload.message.trim()) { text(status, "Type a message first."); return; }
      buttons.forEach((b) => { b.disabled = true; });
      text(status, action === "send" ? "Sending…" : "Rendering…");
      const started = performance.now();
      try {
        const response = await fetch("/console/api/" + action, {
          method: "POST",
          credentials: "same-origin",
          headers: { "content-type": "application/json", "x-csrf-token": token },
          body: JSON.stringify(payload),
        });
        const data = await response.json();
        show(action, response.status, data, performance.now() - started);
        text(status, "");
      } catch (err) {
        text(status, "Failed: " + err);
      } finally {
        buttons.forEach((b) => { b.disabled = false; });
      }
    }

    function show(action, httpStatus, data, roundTrip) {
      const result = document.getElementById("pg-result");
      const meta = document.getElementById("pg-meta");
      const answerWrap = document.getElementById("pg-answer-wrap");
      result.hidden = false;
      meta.replaceChildren();
      if (data.error && data.status === undefined) {
        text(document.getElementById("pg-result-title"), "Refused (" + httpStatus + ")");
        metaRow(meta, "error", data.error);
        answerWrap.hidden = true;
        text(document.getElementById("pg-body"), "");
        return;
      }
      text(document.getElementById("pg-result-title"), (action === "send" ? "Answer" : "Rendered request") + " · HTTP " + data.status);
      for (const [name, value] of Object.entries(data.headers)) metaRow(meta, name, value);
      metaRow(meta, "gateway time", data.elapsed_ms.toFixed(1) + " ms");
      metaRow(meta, "round trip", roundTrip.toFixed(1) + " ms");
      let body = data.body;
      if (action === "render" && body && body.body && !body.steps) {
        for (const key of ["policy", "variant", "prompt_version", "prompt_hash", "upstream"]) {
          if (body[key] !== null && body[key] !== undefined) metaRow(meta, key, String(body[key]));
        }
        body = body.body;
      }
      if (action === "send" && body && body.usage) {
        metaRow(meta, "tokens", body.usage.prompt_tokens + " prompt, " + body.usage.completion_tokens + " completion");
      }
      const answer = action === "send" ? answerOf(body) : null;
      answerWrap.hidden = answer === null;
      text(document.getElementById("pg-answer"), answer || "");
      text(document.getElementById("pg-body-title"), action === "send" ? "Reply body" : "Upstream body");
      text(document.getElementById("pg-body"), JSON.stringify(body, null, 2));
    }

    form.addEventListener("submit", (event) => { event.preventDefault(); run("render"); });
    document.getElementById("pg-send").addEventListener("click", () => run("send"));
  }

  function setupRefresh(box) {
    let timer = null;
    function arm() {
      if (timer) clearTimeout(timer);
      timer = box.checked ? setTimeout(() => window.location.reload(), 10000) : null;
    }
    box.addEventListener("change", arm);
    arm();
  }

  document.addEventListener("DOMContentLoaded", () => {
    const form = document.getElementById("playground");
    if (form) setupPlayground(form);
    const box = document.getElementById("auto-refresh");
    if (box) setupRefresh(box);
  });
})();
