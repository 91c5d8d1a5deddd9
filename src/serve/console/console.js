// Tether console: forms marked data-api are sent as JSON to that /api/ endpoint (the
// submitting button may name another with its own data-api); the answer is shown in the
// form, or after a reload at the top of the page. No library, no build step.
"use strict";

function bodyOf(form, submitter) {
  const body = {};
  for (const el of form.elements) {
    if (!el.name || el.disabled) continue;
    if (el.tagName === "BUTTON") {
      if (el === submitter) body[el.name] = el.value;
      continue;
    }
    if ("list" in el.dataset) {
      if (!Array.isArray(body[el.name])) body[el.name] = [];
      if (el.type !== "checkbox" || el.checked) body[el.name].push(el.value);
    } else if (el.type === "checkbox") {
      body[el.name] = el.checked;
    } else if ("json" in el.dataset) {
      body[el.name] = JSON.parse(el.value);
    } else if ("nullable" in el.dataset && el.value === "") {
      body[el.name] = null;
    } else {
      body[el.name] = el.value;
    }
  }
  return body;
}

function words(answer) {
  if (answer && typeof answer === "object") {
    if (answer.message) return String(answer.message);
    if (answer.error) return String(answer.error);
  }
  return JSON.stringify(answer);
}

function show(el, text, failed) {
  el.textContent = text;
  el.hidden = false;
  el.classList.toggle("failed", failed);
}

document.addEventListener("submit", async (event) => {
  const form = event.target.closest("form[data-api]");
  if (!form) return;
  event.preventDefault();
  const submitter = event.submitter;
  const endpoint = (submitter && submitter.dataset.api) || form.dataset.api;
  const out = form.querySelector("output.answer");
  const body = JSON.stringify(bodyOf(form, submitter));
  const buttons = form.querySelectorAll("button");
  buttons.forEach((b) => { b.disabled = true; });
  let text, failed;
  try {
    const response = await fetch(endpoint, {
      method: "POST",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body,
    });
    const answer = await response.json().catch(() => ({ error: response.statusText }));
    failed = !response.ok;
    text = (failed ? response.status + ": " : "") + words(answer);
  } catch (e) {
    failed = true;
    text = "the server did not answer: " + e;
  }
  buttons.forEach((b) => { b.disabled = false; });
  if (!failed && "reload" in form.dataset) {
    sessionStorage.setItem("tether-flash", text);
    location.reload();
    return;
  }
  if (out) show(out, text, failed);
});

document.addEventListener("change", (event) => {
  const all = event.target.closest("input[data-select-all]");
  if (!all) return;
  document.querySelectorAll('input[type=checkbox][name="' + all.dataset.selectAll + '"]')
    .forEach((box) => { box.checked = all.checked; });
});

document.addEventListener("DOMContentLoaded", () => {
  const text = sessionStorage.getItem("tether-flash");
  const flash = document.getElementById("flash");
  if (text && flash) {
    sessionStorage.removeItem("tether-flash");
    show(flash, text, false);
  }
});
